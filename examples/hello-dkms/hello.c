// SPDX-License-Identifier: GPL-2.0
// The example module of dkms-hook: it only says hello and goodbye in the kernel log.
#include <linux/init.h>
#include <linux/module.h>

static int __init hello_init(void)
{
	pr_info("hello: loaded\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A minimal kernel module built by DKMS (dkms-hook's example)");
