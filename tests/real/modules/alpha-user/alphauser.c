#include <linux/module.h>
#include <linux/init.h>
// Needs zeta-base built first (BUILD_DEPENDS, see Makefile).
static int __init alphauser_init(void) { return 0; }
static void __exit alphauser_exit(void) { }
module_init(alphauser_init);
module_exit(alphauser_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
