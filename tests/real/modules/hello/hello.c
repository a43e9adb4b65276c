// A trivial module for the real tier. MODULE_INFO(pkgrel) shows which package release built it.
#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void) { pr_info("hello @MODVER@\n"); return 0; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
MODULE_INFO(pkgrel, "@PKGREL@");
