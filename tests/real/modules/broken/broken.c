#include <linux/module.h>
#include <linux/init.h>
// Does not compile, on purpose (one error, no cascade): the hook must show the compiler's error and
// fail, and the other modules of the transaction must still be installed.
static int __init broken_init(void) { return broken_undeclared_value; }
static void __exit broken_exit(void) { }
module_init(broken_init);
module_exit(broken_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
