package main

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func dial(ctx context.Context, sock string) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, sock, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}))
}

// removeAll removes every snapshot, children before their parents: the
// suite reuses names from case to case and every case talks to the same
// daemon.
func removeAll(ctx context.Context, sn snapshots.Snapshotter) error {
	for pass := 0; pass < 256; pass++ {
		var infos []snapshots.Info
		if err := sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
			infos = append(infos, i)
			return nil
		}); err != nil {
			return err
		}
		if len(infos) == 0 {
			return nil
		}
		parents := map[string]bool{}
		for _, i := range infos {
			parents[i.Parent] = true
		}
		for _, i := range infos {
			if !parents[i.Name] {
				if err := sn.Remove(ctx, i.Name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// TestDaxfs runs the suite against the socket in DAXFS_SNAPSHOTTER.  Run
// one case per process (-test.run '^TestDaxfs$/^CASE$'): the suite runs
// its cases in parallel and they share names.
func TestDaxfs(t *testing.T) {
	sock := os.Getenv("DAXFS_SNAPSHOTTER")
	if sock == "" {
		t.Skip("DAXFS_SNAPSHOTTER is not set")
	}
	testsuite.SnapshotterSuite(t, "daxfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		conn, err := dial(ctx, sock)
		if err != nil {
			return nil, nil, err
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "daxfs")
		return sn, func() error {
			defer conn.Close()
			if err := removeAll(context.Background(), sn); err != nil {
				return err
			}
			if c, ok := sn.(snapshots.Cleaner); ok {
				return c.Cleanup(context.Background())
			}
			return nil
		}, nil
	})
}
