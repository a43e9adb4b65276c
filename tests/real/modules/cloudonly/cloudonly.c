#include <linux/module.h>
#include <linux/init.h>
// Builds only for the cloud kernel (BUILD_EXCLUSIVE_KERNEL).
static int __init cloudonly_init(void) { return 0; }
static void __exit cloudonly_exit(void) { }
module_init(cloudonly_init);
module_exit(cloudonly_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
