package main

import (
	"context"
	"fmt"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // registers the "gzip" compressor
	"google.golang.org/grpc/status"
)

const snapshotsService = "/containerd.services.snapshots.v1.Snapshots/"

// rawCodec sends and receives message bodies as they are: a request that
// is not the protobuf the method expects.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// badCall is one invalid request and the status code a gRPC server in
// containerd's place answers it with: containerd's snapshotters for the
// snapshot rules, gRPC's status code table (doc/statuscodes.md), as
// grpc-go implements it, for the protocol (a request that does not parse
// is Internal, a unary call without exactly one message Unimplemented).
type badCall struct {
	name string
	want codes.Code
	call func(ctx context.Context, c snapshotsapi.SnapshotsClient, conn *grpc.ClientConn) error
}

func raw(method string, body []byte, opts ...grpc.CallOption) func(context.Context,
	snapshotsapi.SnapshotsClient, *grpc.ClientConn) error {
	return func(ctx context.Context, _ snapshotsapi.SnapshotsClient, conn *grpc.ClientConn) error {
		var out []byte
		return conn.Invoke(ctx, method, &body, &out, append(opts, grpc.ForceCodec(rawCodec{}))...)
	}
}

func prepare(key, parent string) func(context.Context, snapshotsapi.SnapshotsClient,
	*grpc.ClientConn) error {
	return func(ctx context.Context, c snapshotsapi.SnapshotsClient, _ *grpc.ClientConn) error {
		_, err := c.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: "daxfs",
			Key: key, Parent: parent})
		return err
	}
}

func commit(name, key string) func(context.Context, snapshotsapi.SnapshotsClient,
	*grpc.ClientConn) error {
	return func(ctx context.Context, c snapshotsapi.SnapshotsClient, _ *grpc.ClientConn) error {
		_, err := c.Commit(ctx, &snapshotsapi.CommitSnapshotRequest{Snapshotter: "daxfs",
			Name: name, Key: key})
		return err
	}
}

func remove(key string) func(context.Context, snapshotsapi.SnapshotsClient,
	*grpc.ClientConn) error {
	return func(ctx context.Context, c snapshotsapi.SnapshotsClient, _ *grpc.ClientConn) error {
		_, err := c.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: "daxfs",
			Key: key})
		return err
	}
}

// ping lists every snapshot: the daemon still answers, streams included.
func ping(ctx context.Context, c snapshotsapi.SnapshotsClient) error {
	s, err := c.List(ctx, &snapshotsapi.ListSnapshotsRequest{Snapshotter: "daxfs"})
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err != nil {
			if err.Error() == "EOF" {
				return nil
			}
			return err
		}
	}
}

// badCalls sends each invalid request on one connection, checks its code
// and that the daemon answers a List afterwards, then makes a round of
// valid calls as containerd's test suite does, and removes what it made.
func badCalls(sock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := dial(ctx, sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := snapshotsapi.NewSnapshotsClient(conn)
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	calls := []badCall{
		{"prepare_unknown_parent", codes.NotFound, prepare("bad-a", "bad-no-such-parent")},
		{"prepare", codes.OK, prepare("bad-a", "")},
		{"prepare_key_reused", codes.AlreadyExists, prepare("bad-a", "")},
		{"prepare_empty_key", codes.InvalidArgument, prepare("", "")},
		{"commit", codes.OK, commit("bad-c", "bad-a")},
		{"commit_twice", codes.NotFound, commit("bad-c", "bad-a")},
		{"prepare_b", codes.OK, prepare("bad-b", "")},
		{"commit_name_taken", codes.AlreadyExists, commit("bad-c", "bad-b")},
		{"commit_unknown_key", codes.NotFound, commit("bad-x", "bad-no-such-key")},
		{"prepare_child", codes.OK, prepare("bad-d", "bad-c")},
		{"prepare_on_active_parent", codes.InvalidArgument, prepare("bad-e", "bad-d")},
		{"remove_with_children", codes.FailedPrecondition, remove("bad-c")},
		{"remove_unknown", codes.NotFound, remove("bad-no-such-key")},
		{"stat_unknown", codes.NotFound, raw(snapshotsService+"Stat",
			[]byte("\x0a\x05daxfs\x12\x0bbad-nothing"))},
		{"malformed_body", codes.Internal, raw(snapshotsService+"Prepare", garbage)},
		{"malformed_body_stream", codes.Internal, func(ctx context.Context, _ snapshotsapi.SnapshotsClient, conn *grpc.ClientConn) error {
			s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true},
				snapshotsService+"List", grpc.ForceCodec(rawCodec{}))
			if err != nil {
				return err
			}
			if err := s.SendMsg(&garbage); err != nil {
				return err
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			var out []byte
			return s.RecvMsg(&out)
		}},
		// grpc-go's default limit on a received message is 4 MiB too.
		{"oversized_request", codes.ResourceExhausted, raw(snapshotsService+"Prepare",
			make([]byte, 5<<20), grpc.MaxCallSendMsgSize(8<<20))},
		{"no_request_message", codes.Unimplemented, func(ctx context.Context, _ snapshotsapi.SnapshotsClient, conn *grpc.ClientConn) error {
			s, err := conn.NewStream(ctx, &grpc.StreamDesc{}, snapshotsService+"Stat",
				grpc.ForceCodec(rawCodec{}))
			if err != nil {
				return err
			}
			if err := s.CloseSend(); err != nil {
				return err
			}
			var out []byte
			return s.RecvMsg(&out)
		}},
		{"compressed_body", codes.Unimplemented, prepare("bad-z", "")},
		{"unknown_method", codes.Unimplemented, raw(snapshotsService+"Frobnicate", nil)},
		{"unknown_service", codes.Unimplemented, raw("/daxfs.test.v1.Nothing/Stat", nil)},
	}
	failed := 0
	for _, b := range calls {
		cctx := ctx
		var err error
		if b.name == "compressed_body" {
			// grpc-go answers a compressor it does not have with
			// Unimplemented; a server without any compressors the same.
			err = func() error {
				_, err := c.Prepare(cctx, &snapshotsapi.PrepareSnapshotRequest{
					Snapshotter: "daxfs", Key: "bad-z"}, grpc.UseCompressor("gzip"))
				return err
			}()
		} else {
			err = b.call(cctx, c, conn)
		}
		got := status.Code(err)
		if got != b.want {
			fmt.Printf("fail %s: got %v (%v), want %v\n", b.name, got, err, b.want)
			failed++
		} else {
			fmt.Printf("ok %s\n", b.name)
		}
		if err := ping(ctx, c); err != nil {
			fmt.Printf("fail %s_then_list: %v\n", b.name, err)
			failed++
		}
	}
	// What containerd's test suite does, on the same connection.
	sn := proxy.NewSnapshotter(c, "daxfs")
	if err := round(ctx, sn, "bad-round"); err != nil {
		fmt.Printf("fail valid_calls_after: %v\n", err)
		failed++
	} else {
		fmt.Println("ok valid_calls_after")
	}
	for _, k := range []string{"bad-z", "bad-d", "bad-b", "bad-c", "bad-a"} {
		if err := remove(k)(ctx, c, conn); err != nil && status.Code(err) != codes.NotFound {
			return fmt.Errorf("removing %s: %w", k, err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	return nil
}
