// A release of the `hello` module that does not compile (one error, no cascade): the upgrade to
// it must keep the version that was installed.
#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void) { return hello_undeclared_value; }
static void __exit hello_exit(void) { }
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
