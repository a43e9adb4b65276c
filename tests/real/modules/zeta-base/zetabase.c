#include <linux/module.h>
#include <linux/init.h>
// The dependency of alpha-user (BUILD_DEPENDS); it sorts last so a naive order builds it second.
static int __init zetabase_init(void) { return 0; }
static void __exit zetabase_exit(void) { }
module_init(zetabase_init);
module_exit(zetabase_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("@MODVER@");
