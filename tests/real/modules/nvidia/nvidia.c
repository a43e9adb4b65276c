// A stand-in for a driver whose package is locked to its userspace (nvidia-dkms depends on
// nvidia-utils=VERSION): only the module name and version matter.
#include <linux/module.h>
#include <linux/init.h>

static int __init nvidia_init(void) { pr_info("nvidia @MODVER@\n"); return 0; }
static void __exit nvidia_exit(void) { }
module_init(nvidia_init);
module_exit(nvidia_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
