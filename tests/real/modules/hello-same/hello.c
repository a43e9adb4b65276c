// The `hello` module without its package release in it: two releases of its package have
// byte-identical sources (a packaging fix), which must not be rebuilt.
#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void) { pr_info("hello @MODVER@\n"); return 0; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
