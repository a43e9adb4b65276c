// A release of the locked stand-in driver that does not compile (one error, no cascade).
#include <linux/module.h>
#include <linux/init.h>

static int __init nvidia_init(void) { return nvidia_undeclared_value; }
static void __exit nvidia_exit(void) { }
module_init(nvidia_init);
module_exit(nvidia_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
