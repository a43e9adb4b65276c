// A module that builds for the amd64 and cloud kernels but not for a PREEMPT_RT one (the rt
// kernel stands in for a kernel upgrade a driver cannot follow yet).
#include <linux/module.h>
#include <linux/init.h>

#ifdef CONFIG_PREEMPT_RT
#error "rtfail does not support PREEMPT_RT kernels yet"
#endif

static int __init rtfail_init(void) { return 0; }
static void __exit rtfail_exit(void) { }
module_init(rtfail_init);
module_exit(rtfail_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
