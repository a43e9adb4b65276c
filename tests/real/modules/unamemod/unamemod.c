#include <linux/module.h>
#include <linux/init.h>
// Built by a Makefile that always uses one kernel's headers (see Makefile).
static int __init unamemod_init(void) { return 0; }
static void __exit unamemod_exit(void) { }
module_init(unamemod_init);
module_exit(unamemod_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
