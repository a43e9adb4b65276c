// A module whose dkms.conf builds against /lib/modules/$kernelver/build.
#include <linux/module.h>
#include <linux/init.h>

static int __init libmod_init(void) { return 0; }
static void __exit libmod_exit(void) { }
module_init(libmod_init);
module_exit(libmod_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
