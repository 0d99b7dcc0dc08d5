# daxfs build.  GNU make.
#
#   make                          library, daxfsctl and unit test binaries
#   make test                     build, then run tests/run.sh
#   make SAN=address,undefined    sanitizer build (own output dir)
#   make CC=clang O=build/clang   alternative compiler / output dir

# System packages needed to build and test (installed by "make deps").
# Everything make test, make bench and make bench-fuse use.
DEPS_PKGS := build-essential clang pkg-config libssl-dev libdaxctl-dev \
	libndctl-dev libarchive-dev libclang-rt-14-dev python3 e2fsprogs \
	util-linux libcurl4-openssl-dev libjansson-dev libzstd-dev zstd \
	docker-registry umoci skopeo busybox-static libfuse3-dev fuse3 \
	debootstrap \
	libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev libsqlite3-dev \
	golang-go golang-github-containerd-containerd-dev containerd runc

# make's built-in default for CC is "cc"; only that default is replaced,
# anything from the command line or environment is kept.
ifeq ($(origin CC),default)
CC := gcc
endif
CC ?= gcc
AR ?= ar

comma := ,

# Sanitizer builds get their own output directory so their objects never
# mix with normal ones.
ifneq ($(strip $(SAN)),)
O ?= build/san-$(subst $(comma),-,$(strip $(SAN)))
SANFLAGS := -fsanitize=$(strip $(SAN)) -fno-omit-frame-pointer -O1
else
O ?= build
SANFLAGS :=
endif

CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -O2 -g -pthread \
	-MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
CPPFLAGS := -Ifscore -Idaemon -I/usr/include/fuse3
LDFLAGS := -pthread $(SANFLAGS) $(EXTRA_LDFLAGS)
LIBS := -lcrypto -ldaxctl -lpthread
DAEMON_LIBS := -larchive -lcurl -ljansson

# ---------------------------------------------------------------------------
# Sources and outputs

LIB_SRCS := $(sort $(wildcard fscore/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(O)/obj/%.o)
LIB := $(O)/libdaxfs.a

# daemon/: everything but main.c forms libdaxfsd.a, which the tests link.
DAEMON_SRCS := $(filter-out daemon/main.c daemon/view%.c,$(sort $(wildcard daemon/*.c)))
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(O)/obj/%.o)
DLIB := $(if $(DAEMON_SRCS),$(O)/libdaxfsd.a)
DMAIN_OBJS := $(if $(wildcard daemon/main.c),$(O)/obj/daemon/main.o)
DAEMON := $(if $(DMAIN_OBJS),$(O)/daxfsd)
# daemon/view*.c: the FUSE view process, daxfs-view (libfuse3).
VIEW_OBJS := $(patsubst %.c,$(O)/obj/%.o,$(wildcard daemon/view*.c))
VIEW := $(if $(VIEW_OBJS),$(O)/daxfs-view)

CLI_SRCS := $(sort $(wildcard cli/*.c))
CLI_OBJS := $(CLI_SRCS:%.c=$(O)/obj/%.o)
CLI := $(if $(CLI_SRCS),$(O)/daxfsctl)

TEST_SRCS := $(sort $(wildcard tests/unit/test_*.c tests/unit/helper_*.c))
TEST_OBJS := $(TEST_SRCS:%.c=$(O)/obj/%.o)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(O)/tests/%)

ALL_OBJS := $(LIB_OBJS) $(CLI_OBJS) $(TEST_OBJS) $(DAEMON_OBJS) $(DMAIN_OBJS) \
	$(VIEW_OBJS)

# Stamp files: rebuild when the compiler/flags change, and rebuild the
# archive when the set of library sources changes (so deleted files drop
# out of it).
CONFIG_STAMP := $(O)/.stamp-config
MEMBERS_STAMP := $(O)/.stamp-lib-members
CONFIG_STR := $(CC) | $(CPPFLAGS) $(CFLAGS) | $(LDFLAGS) $(LIBS)
MEMBERS_STR := $(LIB_SRCS)

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

.PHONY: all lib cli daemon tests test test-tsan test-long bench deps clean \
	check-clang FORCE

all: lib cli daemon tests

daemon: $(DLIB) $(DAEMON) $(VIEW)

lib: $(LIB)

cli: $(CLI)

# Test binaries whose source is gone are removed so the runner cannot pick
# them up.
STALE_BINS = $(filter-out $(TEST_BINS),\
	$(wildcard $(O)/tests/test_* $(O)/tests/helper_*))

tests: $(TEST_BINS)
	$(if $(strip $(STALE_BINS)),rm -f $(STALE_BINS))

# ---------------------------------------------------------------------------
# Rules

$(CONFIG_STAMP): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(CONFIG_STR)' | cmp -s - $@ || \
		printf '%s\n' '$(CONFIG_STR)' > $@

$(MEMBERS_STAMP): FORCE
	@mkdir -p $(@D)
	@printf '%s\n' '$(MEMBERS_STR)' | cmp -s - $@ || \
		printf '%s\n' '$(MEMBERS_STR)' > $@

# Static pattern rules: objects are explicit targets, so make never deletes
# them as intermediates.
$(LIB_OBJS) $(CLI_OBJS) $(DAEMON_OBJS) $(DMAIN_OBJS) $(VIEW_OBJS): $(O)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(TEST_OBJS): $(O)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests/unit $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS) $(MEMBERS_STAMP)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $(LIB_OBJS)

$(DLIB): $(DAEMON_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $(DAEMON_OBJS)

$(O)/daxfsctl: $(CLI_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB) -ljansson $(LIBS)

$(O)/daxfsd: $(DMAIN_OBJS) $(DLIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(DMAIN_OBJS) $(DLIB) $(LIB) $(DAEMON_LIBS) $(LIBS)

$(O)/daxfs-view: $(VIEW_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(VIEW_OBJS) $(LIB) -lfuse3 $(LIBS)

$(TEST_BINS): $(O)/tests/%: $(O)/obj/tests/unit/%.o $(DLIB) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(DLIB) $(LIB) $(DAEMON_LIBS) $(LIBS)

-include $(ALL_OBJS:.o=.d)

# Benchmarks: bench/<name>.c -> $(O)/bench/<name>, built only by "make bench".
BENCH_SRCS := $(sort $(wildcard bench/*.c))
BENCH_OBJS := $(BENCH_SRCS:%.c=$(O)/obj/%.o)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(O)/bench/%)

$(BENCH_OBJS): $(O)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BENCH_BINS): $(O)/bench/%: $(O)/obj/bench/%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LIBS) -larchive

bench: $(BENCH_BINS)

-include $(BENCH_OBJS:.o=.d)

# ---------------------------------------------------------------------------
# snapshotter/: containerd's Snapshots gRPC service, linked into daxfsd as
# libdaxfssnap.a.  protoc-c turns snapshotter/proto/*.proto into C under
# $(O)/gen at build time; only daxfsd and tests/unit/{test,helper}_snap*.c
# link it.

SNAP_PROTOS := $(sort $(shell find snapshotter/proto -name '*.proto' 2>/dev/null))
SNAP_GEN_SRCS := $(SNAP_PROTOS:snapshotter/proto/%.proto=$(O)/gen/%.pb-c.c)
SNAP_GEN_HDRS := $(SNAP_GEN_SRCS:.c=.h)
SNAP_GEN_OBJS := $(SNAP_GEN_SRCS:$(O)/gen/%.c=$(O)/obj/gen/%.o)
SNAP_SRCS := $(sort $(wildcard snapshotter/*.c))
SNAP_OBJS := $(SNAP_SRCS:%.c=$(O)/obj/%.o)
SNAP_LIB := $(if $(SNAP_SRCS),$(O)/libdaxfssnap.a)
SNAP_CPPFLAGS := -Isnapshotter -I$(O)/gen
SNAP_LINK := $(SNAP_LIB) $(DLIB) $(LIB) -lprotobuf-c -lnghttp2 -lsqlite3
SNAP_TEST_OBJS := $(filter $(O)/obj/tests/unit/test_snap% $(O)/obj/tests/unit/helper_snap%,\
	$(TEST_OBJS))
SNAP_TEST_BINS := $(filter $(O)/tests/test_snap% $(O)/tests/helper_snap%,$(TEST_BINS))

# One protoc-c run writes both files (a grouped pattern rule).
$(O)/gen/%.pb-c.c $(O)/gen/%.pb-c.h: snapshotter/proto/%.proto
	@mkdir -p $(O)/gen
	protoc-c -Isnapshotter/proto --c_out=$(O)/gen $<

$(SNAP_OBJS) $(SNAP_GEN_OBJS) $(SNAP_TEST_OBJS): $(SNAP_GEN_HDRS)
$(SNAP_OBJS) $(SNAP_TEST_OBJS) $(DMAIN_OBJS): CPPFLAGS += $(SNAP_CPPFLAGS)

$(SNAP_OBJS): $(O)/obj/%.o: %.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(SNAP_GEN_OBJS): $(O)/obj/gen/%.o: $(O)/gen/%.c $(CONFIG_STAMP)
	@mkdir -p $(@D)
	$(CC) -I$(O)/gen $(CFLAGS) -c -o $@ $<

$(SNAP_LIB): $(SNAP_OBJS) $(SNAP_GEN_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $(SNAP_OBJS) $(SNAP_GEN_OBJS)

# The archives again after libdaxfssnap.a: it uses libdaxfsd and libdaxfs.
$(DAEMON) $(SNAP_TEST_BINS): $(SNAP_LIB)
$(DAEMON) $(SNAP_TEST_BINS): DAEMON_LIBS += $(SNAP_LINK)

-include $(SNAP_OBJS:.o=.d) $(SNAP_GEN_OBJS:.o=.d)

# ---------------------------------------------------------------------------
# Test, bench and housekeeping targets

test: all
	tests/run.sh $(O)

test-tsan:
	$(MAKE) SAN=thread O=build/san-thread all
	tests/run.sh build/san-thread --only-threaded

test-long: all
	DAXFS_TEST_LONG=1 tests/run.sh $(O)

bench: all
	@if [ -f bench/run.sh ]; then \
		echo "bash bench/run.sh $(O)"; bash bench/run.sh $(O); \
	else \
		echo "bench/run.sh not present, nothing to run"; \
	fi

# Reading through the FUSE view vs overlayfs on tmpfs and ext4 (root;
# never part of "make test").
.PHONY: bench-fuse
bench-fuse: all $(O)/bench/bench_read
	bash bench/fuse.sh $(O)

# containerd with the daxfs snapshotter vs containerd's overlayfs on a
# Debian-based image, two hosts on one region (root; never part of
# "make test").
.PHONY: bench-containerd
bench-containerd: all
	bash bench/containerd.sh $(O)

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends $(DEPS_PKGS)

check-clang:
	$(MAKE) CC=clang O=build/clang all

clean:
	rm -rf build

FORCE:
