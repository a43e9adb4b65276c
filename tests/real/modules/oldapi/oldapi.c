// A module that builds against the test kernels' headers as packaged, and no longer against the
// same kernel rebuilt with a changed API (the rebuilt headers package of the real tier adds
// <linux/dkms_hook_rebuilt.h>, standing for an interface the module does not know).
#include <linux/module.h>
#include <linux/init.h>

#if __has_include(<linux/dkms_hook_rebuilt.h>)
#error "oldapi does not build against these headers: the kernel's API changed"
#endif

static int __init oldapi_init(void) { pr_info("oldapi @MODVER@\n"); return 0; }
static void __exit oldapi_exit(void) { }
module_init(oldapi_init);
module_exit(oldapi_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
