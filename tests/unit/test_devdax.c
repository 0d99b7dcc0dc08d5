/* Device-dax discovery.  Most machines running the tests have no
 * device-dax devices, so this checks the "nothing here" answers and, if
 * devices do exist, that list and query agree. */
#include "check.h"
#include "devdax.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

TEST(list_nonnegative)
{
	struct devdax_info info[8];
	int n = devdax_list(info, 8);

	CHECK(n >= 0);
	CHECK_RC(devdax_list(NULL, 0), n);
	for (int i = 0; i < n && i < 8; i++) {
		uint64_t size = 0, align = 0;

		CHECK(strncmp(info[i].path, "/dev/", 5) == 0);
		CHECK(info[i].size > 0);
		if (access(info[i].path, F_OK))
			continue;	/* no node, e.g. in a container */
		CHECK_RC(devdax_is_devdax(info[i].path), 1);
		CHECK_RC(devdax_query(info[i].path, &size, &align), 0);
		CHECK(size == info[i].size);
		CHECK(align == info[i].align);
	}
	printf("info: %d device-dax device(s)\n", n);
}

TEST(list_bad_args)
{
	CHECK_RC(devdax_list(NULL, -1), -EINVAL);
	CHECK_RC(devdax_list(NULL, 1), -EINVAL);
}

TEST(dev_null_is_not_devdax)
{
	CHECK_RC(devdax_is_devdax("/dev/null"), 0);
}

TEST(regular_file_is_not_devdax)
{
	char path[] = "/tmp/test_devdax.XXXXXX";
	int fd = mkstemp(path);
	uint64_t size, align;
	int is, q;

	CHECK(fd >= 0);
	is = devdax_is_devdax(path);
	q = devdax_query(path, &size, &align);
	close(fd);
	unlink(path);
	CHECK_RC(is, 0);
	CHECK(q < 0);
}

TEST(directory_is_not_devdax)
{
	CHECK_RC(devdax_is_devdax("/"), 0);
}

TEST(missing_path)
{
	uint64_t size, align;

	CHECK_RC(devdax_is_devdax("/nonexistent/dax0.0"), -ENOENT);
	CHECK_RC(devdax_query("/nonexistent/dax0.0", &size, &align), -ENOENT);
}

TEST(query_dev_null)
{
	uint64_t size = 1, align = 1;
	int rc = devdax_query("/dev/null", &size, &align);

	CHECK(rc < 0);
	CHECK_RC(rc, -ENODEV);
	CHECK(size == 1 && align == 1);	/* untouched on failure */
}

CHECK_MAIN_BEGIN("test_devdax")
	RUN(list_nonnegative);
	RUN(list_bad_args);
	RUN(dev_null_is_not_devdax);
	RUN(regular_file_is_not_devdax);
	RUN(directory_is_not_devdax);
	RUN(missing_path);
	RUN(query_dev_null);
CHECK_MAIN_END
