package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

// pullMain parses "[-n NAMESPACE] [-cri] CONTAINERD_SOCK SNAPSHOTTER REF".
func pullMain(args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	ns := fs.String("n", "default", "containerd namespace")
	cri := fs.Bool("cri", false, "label each layer's Prepare as the CRI plugin does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		usage()
	}
	return pull(fs.Arg(0), fs.Arg(1), fs.Arg(2), *ns, *cri)
}

// pull pulls ref (plain http) and unpacks it into snapshotter, the way
// containerd's CRI plugin does: with the unpacker, whose Prepare calls
// carry containerd.io/snapshot.ref so that a snapshotter holding the
// layer already answers AlreadyExists and the blob is not fetched.  With
// cri, the image handler also adds the CRI plugin's layer labels
// (containerd.io/snapshot/cri.image-ref, .layer-digest, .image-layers),
// which let a snapshotter fetch a layer itself.
func pull(address, snapshotter, ref, ns string, cri bool) error {
	ctx := namespaces.WithNamespace(context.Background(), ns)
	client, err := containerd.New(address)
	if err != nil {
		return err
	}
	defer client.Close()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	opts := []containerd.RemoteOpt{containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter), containerd.WithResolver(resolver)}
	if cri {
		opts = append(opts, containerd.WithImageHandlerWrapper(
			snapshotters.AppendInfoHandlerWrapper(ref)))
	}
	img, err := client.Pull(ctx, ref, opts...)
	if err != nil {
		return err
	}
	fmt.Println(img.Name())
	return nil
}
