#!/bin/bash
# The registry client against a real registry (Debian's docker-registry),
# with tests/py/regfault.py in front of it injecting faults: retries,
# resumed blobs, stalls, auth flows, redirects, mirrors, error messages.
# Each case runs $DAXFS_BUILD/tests/helper_registry and checks its output
# and the proxy's request log.
set -u

helper=$DAXFS_BUILD/tests/helper_registry
fault=$DAXFS_SRC/tests/py/regfault.py
dir=$DAXFS_TMP/registry
reg_pid=
proxy_pid=

if ! command -v docker-registry >/dev/null || ! command -v python3 >/dev/null; then
	echo "registry: docker-registry or python3 not installed" >&2
	exit 77
fi
if [ ! -x "$helper" ]; then
	echo "FAIL: registry/setup: $helper not built"
	exit 1
fi

stop() {
	local p
	for p in $proxy_pid $reg_pid; do
		kill "$p" 2>/dev/null
	done
	for p in $proxy_pid $reg_pid; do
		wait "$p" 2>/dev/null
	done
	proxy_pid=
	reg_pid=
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

setup_fail() {
	echo "FAIL: registry/setup: $1"
	[ -f "$dir/registry.log" ] && tail -n 20 "$dir/registry.log" >&2
	exit 1
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL: until it answers at all (any status), for 10 s.
wait_http() {
	python3 - "$1" <<-'EOF'
	import sys, time, urllib.request, urllib.error
	for _ in range(200):
	    try:
	        urllib.request.urlopen(sys.argv[1], timeout=1)
	        sys.exit(0)
	    except urllib.error.HTTPError:
	        sys.exit(0)
	    except OSError:
	        time.sleep(0.05)
	sys.exit(1)
	EOF
}

start_registry() {
	for _ in 1 2 3; do
		REG=127.0.0.1:$(free_port)
		cat >"$dir/config.yml" <<-EOF
		version: 0.1
		log:
		  level: info
		storage:
		  filesystem:
		    rootdirectory: $dir/storage
		http:
		  addr: $REG
		EOF
		docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
		reg_pid=$!
		if wait_http "http://$REG/v2/" && kill -0 "$reg_pid" 2>/dev/null; then
			return 0
		fi
		kill "$reg_pid" 2>/dev/null
		wait "$reg_pid" 2>/dev/null
		reg_pid=
	done
	setup_fail "docker-registry did not start"
}

start_proxy() {
	python3 "$fault" serve --upstream "$REG" --state "$dir" 2>"$dir/proxy.err" &
	proxy_pid=$!
	for _ in $(seq 100); do
		[ -s "$dir/ports" ] && break
		sleep 0.05
	done
	[ -s "$dir/ports" ] || setup_fail "regfault.py did not start: $(cat "$dir/proxy.err")"
	read -r pport _ <"$dir/ports"
	PX=127.0.0.1:$pport
}

mkdir -p "$dir/storage"
start_registry
python3 "$fault" push "http://$REG" test/app v1 "$dir/pushed.env" 2>"$dir/push.err" ||
	setup_fail "push: $(cat "$dir/push.err")"
# shellcheck disable=SC1091
. "$dir/pushed.env"
start_proxy
DEAD=127.0.0.1:$(free_port)
HALF=$((BIG_SIZE / 2))
NOCONF=$dir/no-such-config.json

# ---- helpers ----

pass() { echo "PASS: registry/$1"; }
fail() {
	echo "FAIL: registry/$1: $2"
	sed 's/^/    /' <<<"$out" >&2
}

# hr ARGS...: run the helper with fast test timeouts; output in $out.
hr() {
	out=$("$helper" -c 1000 -s 300 -r 3 -b 20 -C "$NOCONF" "$@" 2>&1)
	rc=$?
}

# ctl WHAT [BODY]: talk to the proxy's control endpoint.  Plain bash
# (/dev/tcp) because starting python for each call is slow.
ctl() {
	local body=${2:-} line
	exec 5<>"/dev/tcp/${PX%:*}/${PX##*:}" || return 1
	printf 'POST /_ctl/%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' \
		"$1" "$PX" "${#body}" "$body" >&5
	while IFS= read -r line <&5 && [ "$line" != $'\r' ]; do :; done
	cat <&5
	exec 5>&-
}
rules() { ctl reset >/dev/null && ctl rules "$1" >/dev/null; }
clear_log() { ctl clearlog >/dev/null; }
plog() { ctl log; }
# nlog PATTERN: how many proxy log lines match PATTERN (grep -E).
nlog() { plog | grep -cE -- "$1"; }

# ok CASE ARGS...: the helper must succeed.
ok() {
	local name=$1
	shift
	hr "$@"
	if [ "$rc" -eq 0 ] && [[ "$out" == ok* ]]; then
		pass "$name"
	else
		fail "$name" "helper failed (exit $rc)"
	fi
}

# err CASE TEXT ARGS...: the helper must fail with TEXT in its message.
err() {
	local name=$1 want=$2
	shift 2
	hr "$@"
	if [ "$rc" -ne 0 ] && grep -qF -- "$want" <<<"$out"; then
		pass "$name"
	else
		fail "$name" "want an error containing '$want' (exit $rc)"
	fi
}

# check RC CASE WHY: a case that passes when RC (of a test just run) is 0.
check() {
	if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2" "$3"; fi
}

auth_config() { printf '%s\n' "$1" >"$dir/docker.json"; }
b64() { printf '%s' "$1" | base64 -w0; }

# ---- manifests ----

ok manifest_tag manifest "$REG" test/app v1
[[ "$out" == "ok bytes=$MAN_SIZE type=$MAN_TYPE sha256=${MAN_DIGEST#sha256:}" ]]
check $? manifest_tag_body "body or content type differs: $out"

ok manifest_digest manifest "$REG" test/app "$MAN_DIGEST"

rules '[{"match": "/v2/", "mode": "corrupt", "count": -1}]'
err manifest_digest_mismatch "digest mismatch" manifest "$PX" test/app "$MAN_DIGEST"
err blob_get_digest_mismatch "digest mismatch" getblob "$PX" test/app "$CFG_DIGEST" 0
rules '[]'

err manifest_404 \
	"registry $REG: GET /v2/test/app/manifests/nope: 404 Not Found (MANIFEST_UNKNOWN: manifest unknown)" \
	manifest "$REG" test/app nope
err blob_404 "404 Not Found (BLOB_UNKNOWN: blob unknown to registry)" \
	blob "$REG" test/app "sha256:$(printf '%064d' 0)" 10
err blob_get_too_big "response larger than 1000 bytes" getblob "$REG" test/app "$BIG_DIGEST" 1000

# ---- blobs ----

ok blob_stream blob "$REG" test/app "$BIG_DIGEST" "$BIG_SIZE"
# A slow reader fills the buffer: the transfer pauses and resumes.
ok blob_slow_reader -k 4096 -d 100 blob "$REG" test/app "$P1_DIGEST" "$P1_SIZE"
ok blob_close_early partial "$REG" test/app "$BIG_DIGEST" "$BIG_SIZE" 100000
ok blob_get getblob "$REG" test/app "$CFG_DIGEST" 4096
err blob_longer_than_size "more data than the expected 1000 bytes" \
	blob "$REG" test/app "$BIG_DIGEST" 1000
ok blob_parallel parallel "$REG" test/app "$BIG_DIGEST:$BIG_SIZE" \
	"$SMALL_DIGEST:$SMALL_SIZE" "$P1_DIGEST:$P1_SIZE" "$P2_DIGEST:$P2_SIZE"

# ---- retries ----

rules '[{"match": "/blobs/", "mode": "status", "status": 500, "count": 2}]'
ok retry_500 blob "$PX" test/app "$SMALL_DIGEST" "$SMALL_SIZE"
[ "$(nlog 'GET /v2/test/app/blobs/')" -eq 3 ]
check $? retry_500_requests "want 3 requests: $(plog)"

# Retry-After: 0 overrides a 3 s backoff.
rules '[{"match": "/manifests/", "mode": "status", "status": 429, "count": 1,
	"code": "TOOMANYREQUESTS", "headers": {"Retry-After": "0"}}]'
t0=$(date +%s%N)
ok retry_429 -b 3000 manifest "$PX" test/app v1
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 2500 ] && [ "$(nlog 'action=status status=429')" -eq 1 ]
check $? retry_429_retry_after "took ${ms} ms: $(plog)"

rules '[{"match": "/manifests/", "mode": "status", "status": 503, "count": -1}]'
err retry_503_exhausted "503 Service Unavailable (INJECTED: injected fault) (gave up after 3 attempts)" \
	-r 2 manifest "$PX" test/app v1

err retry_connect_refused "gave up after 3 attempts" -r 2 manifest "$DEAD" test/app v1
[[ "$out" == *ECONNREFUSED*"registry $DEAD: GET /v2/test/app/manifests/v1"* ]]
check $? retry_connect_refused_message "unexpected message: $out"

# ---- resuming blobs ----

rules '[{"match": "/blobs/", "mode": "cut", "count": 1}]'
ok resume_after_cut blob "$PX" test/app "$BIG_DIGEST" "$BIG_SIZE"
[ "$(nlog "range=bytes=$HALF- auth=- action=forward status=206")" -eq 1 ]
check $? resume_after_cut_range "want a Range request from byte $HALF: $(plog)"

rules '[{"match": "/blobs/", "mode": "cut", "count": 1},
	{"match": "/blobs/", "mode": "norange", "count": 1}]'
ok resume_range_ignored blob "$PX" test/app "$BIG_DIGEST" "$BIG_SIZE"
[ "$(nlog "range=bytes=$HALF- auth=- action=norange status=200")" -eq 1 ]
check $? resume_range_ignored_log "want a 200 answer to a Range request: $(plog)"

rules '[{"match": "/blobs/", "mode": "cut", "count": 3, "bytes": 100000}]'
ok resume_many_cuts -r 1 blob "$PX" test/app "$BIG_DIGEST" "$BIG_SIZE"
[ "$(nlog 'range=bytes=300000- ')" -eq 1 ]
check $? resume_many_cuts_range "want 4 requests, the last from byte 300000: $(plog)"

rules '[{"match": "/blobs/", "mode": "stall", "count": 1, "secs": 10}]'
ok resume_after_stall blob "$PX" test/app "$BIG_DIGEST" "$BIG_SIZE"
[ "$(nlog "range=bytes=$HALF- ")" -eq 1 ]
check $? resume_after_stall_range "want a Range request from byte $HALF: $(plog)"

rules '[{"match": "/blobs/", "mode": "stall_headers", "count": -1, "secs": 10}]'
t0=$(date +%s%N)
err stall_exhausted "no data for 300 ms (gave up after 3 attempts)" \
	-r 2 blob "$PX" test/app "$SMALL_DIGEST" "$SMALL_SIZE"
ms=$((($(date +%s%N) - t0) / 1000000))
[[ "$out" == *ETIMEDOUT* ]] && [ "$ms" -lt 3000 ] && [ "$(nlog 'action=stall_headers')" -eq 3 ]
check $? stall_exhausted_timing "want ETIMEDOUT, 3 attempts, well under 3 s; took ${ms} ms: $(plog)"

# ---- auth ----

rules '[{"match": "/v2/", "mode": "basic", "user": "alice", "pass": "s3cret"}]'
err auth_required "registry $PX: authentication required (no credentials for $PX)" \
	manifest "$PX" test/app v1

auth_config "{\"auths\": {\"$PX\": {\"auth\": \"$(b64 alice:s3cret)\"}}}"
clear_log
ok auth_basic -n 2 -C "$dir/docker.json" manifest "$PX" test/app v1
[ "$(nlog 'action=challenge')" -eq 1 ] && [ "$(nlog 'auth=Basic action=forward')" -eq 2 ]
check $? auth_basic_cached "want one challenge, then Basic twice: $(plog)"

auth_config "{\"auths\": {\"http://$PX\": {\"username\": \"alice\", \"password\": \"wrong\"}}}"
err auth_basic_rejected "401 Unauthorized (UNAUTHORIZED: authentication required); credentials rejected" \
	-C "$dir/docker.json" manifest "$PX" test/app v1

rules '[{"match": "/v2/", "mode": "bearer", "token": "t-anon"}]'
ok auth_bearer_anonymous -n 2 blob "$PX" test/app "$SMALL_DIGEST" "$SMALL_SIZE"
[ "$(nlog 'GET /token\?service=regfault&scope=repository%3Atest%2Fapp%3Apull ')" -eq 1 ] &&
	[ "$(nlog 'action=challenge')" -eq 1 ] && [ "$(nlog 'auth=Bearer action=forward')" -eq 2 ]
check $? auth_bearer_cached "want one token fetch reused by the second pull: $(plog)"

rules '[{"match": "/v2/", "mode": "bearer", "token": "t-user", "user": "bob", "pass": "pw",
	"field": "access_token"}]'
err auth_bearer_no_credentials "registry $PX: authentication required (no credentials for $PX)" \
	manifest "$PX" test/app v1
auth_config "{\"auths\": {\"$PX\": {\"auth\": \"$(b64 bob:pw)\"}}}"
ok auth_bearer_credentials -C "$dir/docker.json" manifest "$PX" test/app v1
[ "$(nlog 'GET /token.* auth=Basic action=token status=200')" -eq 1 ]
check $? auth_bearer_credentials_sent "want Basic credentials at the token endpoint: $(plog)"

rules '[{"match": "/v2/", "mode": "bearer", "token": "t-refresh", "refresh": "r-123"}]'
auth_config "{\"auths\": {\"$PX\": {\"identitytoken\": \"r-123\"}}}"
ok auth_identity_token -C "$dir/docker.json" manifest "$PX" test/app v1
auth_config "{\"auths\": {\"$PX\": {\"registrytoken\": \"t-refresh\"}}}"
clear_log
ok auth_registry_token -C "$dir/docker.json" manifest "$PX" test/app v1
[ "$(nlog '/token')" -eq 0 ]
check $? auth_registry_token_direct "a registry token needs no token endpoint: $(plog)"

# Mid-blob cut behind auth: the resumed request carries the token too.
rules '[{"match": "/v2/", "mode": "bearer", "token": "tk"},
	{"match": "/blobs/", "mode": "cut", "count": 2}]'
ok parallel_auth_resume parallel "$PX" test/app "$BIG_DIGEST:$BIG_SIZE" \
	"$SMALL_DIGEST:$SMALL_SIZE" "$P1_DIGEST:$P1_SIZE" "$P2_DIGEST:$P2_SIZE"
[ "$(nlog 'range=bytes=[1-9][0-9]*- auth=Bearer action=forward status=206')" -eq 2 ]
check $? parallel_auth_resume_ranges "want 2 resumed requests with the token: $(plog)"

# ---- redirects ----

auth_config "{\"auths\": {\"$PX\": {\"auth\": \"$(b64 alice:s3cret)\"}}}"
rules '[{"match": "/v2/", "mode": "basic", "user": "alice", "pass": "s3cret"},
	{"match": "/blobs/", "mode": "redirect", "count": -1}]'
ok redirect_blob -C "$dir/docker.json" blob "$PX" test/app "$BIG_DIGEST" "$BIG_SIZE"
[ "$(nlog "^target GET /v2/test/app/blobs/$BIG_DIGEST range=- auth=- action=forward status=200")" -eq 1 ] &&
	[ "$(nlog 'auth=Basic action=redirect status=307')" -eq 1 ]
check $? redirect_no_auth_leak "the redirect target must not see the registry's credentials: $(plog)"

# ---- mirrors and insecure hosts ----

rules '[]'
ok mirror_used -m "mirror.invalid=http://$PX/" manifest mirror.invalid test/app v1
[ "$(nlog 'GET /v2/test/app/manifests/v1 ')" -eq 1 ]
check $? mirror_used_log "the mirror was not asked: $(plog)"

rules '[{"match": "/manifests/", "mode": "status", "status": 404, "count": -1,
	"code": "MANIFEST_UNKNOWN"}]'
ok mirror_fallback -m "$REG=http://$PX" -m "other.io=http://$DEAD" manifest "$REG" test/app v1
[ "$(nlog 'status=404')" -eq 1 ]
check $? mirror_fallback_once "a failing mirror is asked once: $(plog)"
ok mirror_dead_fallback -m "$REG=http://$DEAD" blob "$REG" test/app "$SMALL_DIGEST" "$SMALL_SIZE"

# 0.0.0.0 reaches the local registry but is not loopback: https unless
# listed as insecure.
port=${REG##*:}
err insecure_needs_listing "registry 0.0.0.0:$port: GET /v2/test/app/manifests/v1" \
	-r 1 manifest "0.0.0.0:$port" test/app v1
grep -qiE 'ssl|tls' <<<"$out"
check $? insecure_tls_attempted "expected a TLS failure: $out"
ok insecure_listed -i "0.0.0.0:$port" manifest "0.0.0.0:$port" test/app v1
ok insecure_listed_host_only -i 0.0.0.0 manifest "0.0.0.0:$port" test/app v1

stop
trap - EXIT
exit 0
