package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
)

// stress runs conns connections with workers goroutines each (so many
// streams at once on every connection), each making rounds of
// Prepare, Stat, List, Commit, View, Mounts, Usage, Update and Remove
// on snapshots of its own, then checks that nothing is left.
func stress(sock string, conns, workers, rounds int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, conns*workers)
	for c := 0; c < conns; c++ {
		conn, err := dial(ctx, sock)
		if err != nil {
			return err
		}
		defer conn.Close()
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "daxfs")
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				for r := 0; r < rounds; r++ {
					if err := round(ctx, sn, fmt.Sprintf("%s-%d", id, r)); err != nil {
						errs <- fmt.Errorf("%s round %d: %w", id, r, err)
						return
					}
				}
			}(fmt.Sprintf("stress-%d-%d", c, w))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	conn, err := dial(ctx, sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	n := 0
	err = proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "daxfs").Walk(ctx,
		func(context.Context, snapshots.Info) error { n++; return nil })
	if err == nil && n != 0 {
		err = fmt.Errorf("%d snapshots left", n)
	}
	return err
}

func round(ctx context.Context, sn snapshots.Snapshotter, id string) error {
	base, active, view := id+"-base", id+"-active", id+"-view"
	if _, err := sn.Prepare(ctx, base+"-tmp", ""); err != nil {
		return err
	}
	if err := sn.Commit(ctx, base, base+"-tmp"); err != nil {
		return err
	}
	if _, err := sn.Prepare(ctx, active, base, snapshots.WithLabels(map[string]string{"w": id})); err != nil {
		return err
	}
	if _, err := sn.Prepare(ctx, active, base); !errdefs.IsAlreadyExists(err) {
		return fmt.Errorf("second Prepare of %s: %v", active, err)
	}
	if _, err := sn.View(ctx, view, base); err != nil {
		return err
	}
	if _, err := sn.Mounts(ctx, active); err != nil {
		return err
	}
	if _, err := sn.Usage(ctx, active); err != nil {
		return err
	}
	info, err := sn.Stat(ctx, active)
	if err != nil || info.Parent != base || info.Kind != snapshots.KindActive {
		return fmt.Errorf("Stat %s: %+v %v", active, info, err)
	}
	info.Labels["u"] = "1"
	if _, err := sn.Update(ctx, info, "labels.u"); err != nil {
		return err
	}
	seen := 0
	if err := sn.Walk(ctx, func(context.Context, snapshots.Info) error { seen++; return nil },
		fmt.Sprintf(`labels.w==%q`, id)); err != nil || seen != 1 {
		return fmt.Errorf("Walk labels.w==%s: %d seen, %v", id, seen, err)
	}
	if err := sn.Remove(ctx, base); !errdefs.IsFailedPrecondition(err) {
		return fmt.Errorf("Remove of a parent: %v", err)
	}
	for _, k := range []string{view, active, base} {
		if err := sn.Remove(ctx, k); err != nil {
			return err
		}
	}
	if _, err := sn.Stat(ctx, base); !errdefs.IsNotFound(err) {
		return fmt.Errorf("Stat after Remove: %v", err)
	}
	return nil
}
