package main

import (
	"context"
	"fmt"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
)

// pull pulls ref (plain http) and unpacks it into snapshotter, the way
// containerd's CRI plugin does: with the unpacker, whose Prepare calls
// carry containerd.io/snapshot.ref so that a snapshotter holding the
// layer already answers AlreadyExists and the blob is not fetched.
func pull(address, snapshotter, ref string) error {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	client, err := containerd.New(address)
	if err != nil {
		return err
	}
	defer client.Close()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	img, err := client.Pull(ctx, ref, containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter), containerd.WithResolver(resolver))
	if err != nil {
		return err
	}
	fmt.Println(img.Name())
	return nil
}
