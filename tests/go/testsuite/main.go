// daxfs-snaptest: drives daxfsd's containerd snapshotter from Go, with
// containerd's own client code.
//
//	daxfs-snaptest suite -test.run '^TestDaxfs$/^Basic$'   (DAXFS_SNAPSHOTTER=SOCK)
//	daxfs-snaptest pull [-n NAMESPACE] [-cri] CONTAINERD_SOCK SNAPSHOTTER REF
//	daxfs-snaptest stress SOCK CONNS WORKERS ROUNDS
//	daxfs-snaptest badcalls SOCK
//
// suite runs containerd's snapshotter test suite (snapshots/testsuite)
// through snapshots/proxy; pull pulls REF through a containerd with
// unpacking into SNAPSHOTTER, as containerd's CRI plugin does (ctr's
// pull unpacks without the labels that let a snapshotter skip layers);
// stress runs many calls at once on several connections; badcalls sends
// invalid requests and checks the status codes (one "ok NAME" or
// "fail NAME: WHY" line each).
//
// Built in GOPATH mode against Debian's containerd sources:
//
//	GO111MODULE=off GOPATH=DIR:/usr/share/gocode GOPROXY=off go build
package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: daxfs-snaptest suite [-test.* flags] |\n"+
		"       pull [-n NAMESPACE] [-cri] CONTAINERD_SOCK SNAPSHOTTER REF |\n"+
		"       stress SOCK CONNS WORKERS ROUNDS | badcalls SOCK")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "suite":
		os.Args = append(os.Args[:1], os.Args[2:]...)
		testing.Main(regexp.MatchString, []testing.InternalTest{{Name: "TestDaxfs", F: TestDaxfs}}, nil, nil)
	case "pull":
		if err := pullMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "pull:", err)
			os.Exit(1)
		}
	case "stress":
		if len(os.Args) != 6 {
			usage()
		}
		var n [3]int
		for i := range n {
			v, err := strconv.Atoi(os.Args[3+i])
			if err != nil || v < 1 {
				usage()
			}
			n[i] = v
		}
		if err := stress(os.Args[2], n[0], n[1], n[2]); err != nil {
			fmt.Fprintln(os.Stderr, "stress:", err)
			os.Exit(1)
		}
	case "badcalls":
		if len(os.Args) != 3 {
			usage()
		}
		if err := badCalls(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "badcalls:", err)
			os.Exit(1)
		}
	default:
		usage()
	}
}
