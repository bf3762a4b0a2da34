// Command fedreg-client is a small Go client of fedreg, on the stubs that
// protoc-gen-go and protoc-gen-go-grpc generate from proto/fedreg/v1.
//
// Against two registries A and B it creates sites on A, lists them page
// after page, peers B with A and refreshes B's cache of A (RefreshPeer),
// then follows A's changes (a Follow stream) while it creates one more site.
//
//	fedreg-client -a HOST:PORT -a-token TOKEN -b HOST:PORT -b-token TOKEN
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	fedregv1 "github.com/fedreg/fedreg/gen/go/fedreg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// registry is a connection to one fedreg server, with its admin token.
type registry struct {
	conn  *grpc.ClientConn
	token string
}

func dial(ctx context.Context, addr, token string) (*registry, error) {
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &registry{conn: conn, token: token}, nil
}

// authed is ctx carrying `authorization: Bearer <token>`.
func (r *registry) authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+r.token)
}

func (r *registry) sites() fedregv1.RegistryServiceClient {
	return fedregv1.NewRegistryServiceClient(r.conn)
}

func (r *registry) peers() fedregv1.PeerServiceClient {
	return fedregv1.NewPeerServiceClient(r.conn)
}

// listSites reads every site, pageSize per page; it returns the sites and
// the number of pages read.
func (r *registry) listSites(ctx context.Context, pageSize int32) ([]*fedregv1.Site, int, error) {
	var all []*fedregv1.Site
	token := ""
	for pages := 1; ; pages++ {
		page, err := r.sites().ListSites(r.authed(ctx), &fedregv1.ListRequest{PageSize: pageSize, PageToken: token})
		if err != nil {
			return nil, pages, fmt.Errorf("ListSites: %w", err)
		}
		all = append(all, page.Sites...)
		if page.NextPageToken == "" {
			return all, pages, nil
		}
		token = page.NextPageToken
	}
}

func (r *registry) createSite(ctx context.Context, loginBase string) (*fedregv1.Site, error) {
	site, err := r.sites().CreateSite(r.authed(ctx), &fedregv1.CreateSiteRequest{
		LoginBase: loginBase,
		Name:      "Site " + loginBase,
	})
	if err != nil {
		return nil, fmt.Errorf("CreateSite %s: %w", loginBase, err)
	}
	return site, nil
}

// peerWith registers `from` as a peer of `to` and `to` as a peer of
// `from`, with a peer token issued by `from`, so that `to` can refresh its
// cache of `from`. It returns the id of `from`'s record on `to`.
func peerWith(ctx context.Context, from *registry, fromURL string, to *registry, toURL string) (int64, error) {
	toOnFrom, err := from.peers().CreatePeer(from.authed(ctx), &fedregv1.CreatePeerRequest{Peername: "b", PeerUrl: toURL})
	if err != nil {
		return 0, fmt.Errorf("CreatePeer b: %w", err)
	}
	peerID := toOnFrom.PeerId
	issued, err := fedregv1.NewTokenServiceClient(from.conn).CreateToken(from.authed(ctx), &fedregv1.CreateTokenRequest{
		Name: "b pulls from a", Role: "peer", PeerId: &peerID,
	})
	if err != nil {
		return 0, fmt.Errorf("CreateToken: %w", err)
	}
	fromOnTo, err := to.peers().CreatePeer(to.authed(ctx), &fedregv1.CreatePeerRequest{
		Peername: "a", PeerUrl: fromURL, OutboundToken: issued.Token,
	})
	if err != nil {
		return 0, fmt.Errorf("CreatePeer a: %w", err)
	}
	return fromOnTo.PeerId, nil
}

func run() error {
	addrA := flag.String("a", "", "registry A, HOST:PORT")
	tokenA := flag.String("a-token", "", "an admin token of A")
	addrB := flag.String("b", "", "registry B, HOST:PORT")
	tokenB := flag.String("b-token", "", "an admin token of B")
	flag.Parse()
	if *addrA == "" || *addrB == "" {
		return fmt.Errorf("usage: fedreg-client -a HOST:PORT -a-token TOKEN -b HOST:PORT -b-token TOKEN")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := dial(ctx, *addrA, *tokenA)
	if err != nil {
		return err
	}
	defer a.conn.Close()
	b, err := dial(ctx, *addrB, *tokenB)
	if err != nil {
		return err
	}
	defer b.conn.Close()

	// Sites on A, listed two per page.
	for _, name := range []string{"goa1", "goa2", "goa3"} {
		if _, err := a.createSite(ctx, name); err != nil {
			return err
		}
	}
	sites, pages, err := a.listSites(ctx, 2)
	if err != nil {
		return err
	}
	if len(sites) != 3 || pages != 2 {
		return fmt.Errorf("listed %d sites in %d pages, expected 3 in 2", len(sites), pages)
	}
	fmt.Printf("ListSites: %d sites in %d pages of 2\n", len(sites), pages)

	// B caches A's objects.
	aOnB, err := peerWith(ctx, a, "http://"+*addrA, b, "http://"+*addrB)
	if err != nil {
		return err
	}
	report, err := b.peers().RefreshPeer(b.authed(ctx), &fedregv1.RefreshPeerRequest{
		Peer: &fedregv1.RefreshPeerRequest_PeerId{PeerId: aOnB},
	})
	if err != nil {
		return fmt.Errorf("RefreshPeer: %w", err)
	}
	if report.Outcome != fedregv1.RefreshOutcome_REFRESH_OUTCOME_APPLIED {
		return fmt.Errorf("RefreshPeer: %s: %s", report.Outcome, report.Reason)
	}
	for _, c := range report.Classes {
		if c.Class == "sites" && c.Added != 3 {
			return fmt.Errorf("RefreshPeer added %d sites, expected 3", c.Added)
		}
	}
	cached, _, err := b.listSites(ctx, 100)
	if err != nil {
		return err
	}
	fmt.Printf("RefreshPeer: %s in %.3f s; B lists %d sites\n", report.Outcome, report.TotalSeconds, len(cached))

	// A's changes, as they are committed.
	follow, err := fedregv1.NewPeeringServiceClient(a.conn).Follow(a.authed(ctx), &fedregv1.FollowRequest{HeartbeatSeconds: 1})
	if err != nil {
		return fmt.Errorf("Follow: %w", err)
	}
	first, err := follow.Recv()
	if err != nil {
		return fmt.Errorf("Follow: %w", err)
	}
	at := first.Checkpoint.GetRevision()
	fmt.Printf("Follow: A at revision %d\n", at)
	if _, err := a.createSite(ctx, "goa4"); err != nil {
		return err
	}
	for {
		event, err := follow.Recv()
		if err != nil {
			return fmt.Errorf("Follow: %w", err)
		}
		if event.Heartbeat {
			continue
		}
		if event.Checkpoint.GetRevision() <= at {
			return fmt.Errorf("Follow: revision %d after %d", event.Checkpoint.GetRevision(), at)
		}
		fmt.Printf("Follow: A changed, now at revision %d\n", event.Checkpoint.GetRevision())
		return nil
	}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fedreg-client:", err)
		os.Exit(1)
	}
}
