#!/usr/bin/env bash
# Test runner.
#
#   tests/run.sh BUILD_DIR [--only-threaded]
#
# Runs every executable BUILD_DIR/tests/test_* binary, then every
# tests/sh/*.sh script.  With --only-threaded only binaries named *_mt run
# (used for ThreadSanitizer builds) and shell tests are skipped.
#
# Every binary and script runs from the repository root with:
#   DAXFS_BUILD  absolute path of BUILD_DIR
#   DAXFS_SRC    absolute path of the repository root
#   DAXFS_TMP    a private temporary directory, removed afterwards
#
# Output lines "PASS: prog/case" and "FAIL: prog/case" on stdout are
# counted.  A binary or script that exits non-zero without printing a FAIL
# line counts as one failure; a script that exits 0 without printing any
# PASS/FAIL line counts as one pass; a script exiting 77 is skipped.
# Each run is limited to DAXFS_TEST_TIMEOUT seconds (default 300).
# DAXFS_TEST_LONG=1 is passed through for long-running tests.

set -u

usage() {
	echo "usage: $0 BUILD_DIR [--only-threaded]" >&2
	exit 2
}

build_dir=
only_threaded=0
for arg in "$@"; do
	case "$arg" in
	--only-threaded) only_threaded=1 ;;
	-h|--help) usage ;;
	-*) echo "$0: unknown option: $arg" >&2; usage ;;
	*)
		[ -z "$build_dir" ] || usage
		build_dir=$arg
		;;
	esac
done
[ -n "$build_dir" ] || usage
if [ ! -d "$build_dir" ]; then
	echo "$0: build directory not found: $build_dir" >&2
	exit 2
fi

export LC_ALL=C
DAXFS_BUILD=$(cd "$build_dir" && pwd -P) || exit 2
DAXFS_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P) || exit 2
export DAXFS_BUILD DAXFS_SRC
cd "$DAXFS_SRC" || exit 2

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

timeout_s=${DAXFS_TEST_TIMEOUT:-300}

passed=0
failed=0
skipped=0
failed_names=()
cur_tmp=
work_dir=
out_log=
pid_file=
rc_file=

# Kill whatever is left in the process group of the last test.  timeout(1)
# puts itself and the test into a new process group whose id is its pid.
kill_group() {
	local pgid
	[ -n "$pid_file" ] && [ -s "$pid_file" ] || return 0
	pgid=$(cat "$pid_file")
	kill -TERM -- "-$pgid" 2>/dev/null || return 0
	sleep 1
	kill -KILL -- "-$pgid" 2>/dev/null
	return 0
}

cleanup() {
	if [ -n "$cur_tmp" ]; then
		rm -rf --one-file-system "$cur_tmp"
		cur_tmp=
	fi
	if [ -n "$work_dir" ]; then
		rm -rf "$work_dir"
		work_dir=
	fi
}
trap cleanup EXIT
trap 'kill_group; cleanup; exit 130' INT
trap 'kill_group; cleanup; exit 143' TERM

work_dir=$(mktemp -d /tmp/daxfs-run.XXXXXX) || exit 2
out_log=$work_dir/out
pid_file=$work_dir/pid
rc_file=$work_dir/rc

# run_cmd CMD...: run CMD under timeout(1) with a private DAXFS_TMP; leave
# its exit status in $rc_file.  Processes the test left behind in its
# process group are killed so they cannot hold the output pipe open.
run_cmd() {
	local rc
	# fd 3 carries the test's stderr; bash's own "Segmentation fault"
	# style notices go to /dev/null (run_one reports the status itself).
	{
		(
			trap - INT QUIT
			echo "$BASHPID" >"$pid_file"
			DAXFS_TMP=$cur_tmp exec timeout --kill-after=10 \
				"$timeout_s" "$@" </dev/null 2>&3 3>&-
		)
	} 3>&2 2>/dev/null
	rc=$?
	kill -KILL -- "-$(cat "$pid_file" 2>/dev/null)" 2>/dev/null
	echo "$rc" 2>/dev/null >"$rc_file"
}

now() { printf '%s\n' "$EPOCHREALTIME"; }
start=$(now)

# run_one KIND NAME CMD...
#   KIND is "bin" or "sh".  Streams the output, then updates the counters.
run_one() {
	local kind=$1 name=$2
	shift 2
	local rc npass nfail

	cur_tmp=$(mktemp -d /tmp/daxfs-test.XXXXXX) || {
		echo "FAIL: $name (mktemp failed)"
		failed=$((failed + 1))
		failed_names+=("$name")
		return
	}

	# stdout is teed to a log for counting; stderr goes straight through.
	# The pipeline runs in the background so that "wait" can be
	# interrupted: on SIGINT/SIGTERM the trap kills the test's process group.
	rm -f "$pid_file" "$rc_file"
	run_cmd "$@" | tee "$out_log" &
	wait
	rc=$(cat "$rc_file" 2>/dev/null) || rc=1

	rm -rf --one-file-system "$cur_tmp"
	cur_tmp=

	npass=$(grep -c '^PASS: ' "$out_log")
	nfail=$(grep -c '^FAIL: ' "$out_log")
	passed=$((passed + npass))
	failed=$((failed + nfail))
	if [ "$nfail" -gt 0 ]; then
		while IFS= read -r line; do
			failed_names+=("${line#FAIL: }")
		done < <(grep '^FAIL: ' "$out_log")
	fi

	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "FAIL: $name (timed out after ${timeout_s}s)"
		failed=$((failed + 1))
		failed_names+=("$name (timeout)")
	elif [ "$kind" = sh ] && [ "$rc" -eq 77 ]; then
		echo "SKIP: $name"
		skipped=$((skipped + 1))
	elif [ "$rc" -ne 0 ]; then
		if [ "$rc" -gt 128 ]; then
			echo "$name: killed by signal $((rc - 128))" >&2
		else
			echo "$name: exited with status $rc" >&2
		fi
		if [ "$nfail" -eq 0 ]; then
			echo "FAIL: $name (exit status $rc)"
			failed=$((failed + 1))
			failed_names+=("$name")
		fi
	elif [ "$npass" -eq 0 ] && [ "$nfail" -eq 0 ]; then
		if [ "$kind" = sh ]; then
			echo "PASS: $name"
			passed=$((passed + 1))
		else
			echo "$name: printed no PASS/FAIL lines" >&2
		fi
	fi
}

for t in "$DAXFS_BUILD"/tests/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=$(basename "$t")
	if [ "$only_threaded" -eq 1 ] && [[ "$name" != *_mt ]]; then
		continue
	fi
	run_one bin "$name" "$t"
done

if [ "$only_threaded" -eq 0 ]; then
	for s in "$DAXFS_SRC"/tests/sh/*.sh; do
		[ -f "$s" ] || continue
		run_one sh "$(basename "$s" .sh)" bash "$s"
	done
fi

end=$(now)

if [ $((passed + failed)) -eq 0 ]; then
	echo "no tests ran"
fi
if [ "${#failed_names[@]}" -gt 0 ]; then
	echo "failures:"
	for n in "${failed_names[@]}"; do
		echo "  $n"
	done
fi

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
awk -v s="$start" -v e="$end" 'BEGIN { printf "wall time: %.1fs\n", e - s }'

if [ "$failed" -gt 0 ]; then
	exit 1
fi
if [ $((passed + failed)) -eq 0 ]; then
	exit 1
fi
exit 0
