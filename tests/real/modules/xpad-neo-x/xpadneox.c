#include <linux/module.h>
#include <linux/init.h>
// A module whose name and version contain hyphens (like xpadneo git versions, FS#73194).
static int __init xpadneox_init(void) { return 0; }
static void __exit xpadneox_exit(void) { }
module_init(xpadneox_init);
module_exit(xpadneox_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
