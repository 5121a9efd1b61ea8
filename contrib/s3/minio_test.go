package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/vineroute/vinequeue"
)

// The tests here run against a real MinIO server, the store users run,
// where the fake (gofakes3) stands in elsewhere for the faults it can
// inject. The server is the minio binary, found as $VINEQUEUE_MINIO, on
// PATH, or in GOPATH/bin; without it the tests are skipped with a notice,
// except under CI=true, where .ci/run installs it and its absence fails.
//
// To get it: go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
// (a build from the Go module proxy: about 4 minutes on 2 cores, seconds
// once the build cache has it).
const minioInstall = "go install github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

func minioBinary() string {
	if p := os.Getenv("VINEQUEUE_MINIO"); p != "" {
		return p
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "minio")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// startMinIO starts a MinIO server on 127.0.0.1 with a fresh data
// directory and testBucket, and returns a client for it; both end with t.
func startMinIO(t *testing.T) *minio.Client {
	t.Helper()
	bin := minioBinary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no minio binary under CI=true (.ci/run installs it: %s)", minioInstall)
		}
		t.Skipf("NOTICE: no minio binary, so the tests against a real MinIO are skipped; to run them: %s", minioInstall)
	}
	const user, password = "vinequeue", "vinequeue-secret"
	addr, console := freeAddr(t), freeAddr(t)
	var out bytes.Buffer
	cmd := exec.Command(bin, "server", t.TempDir(), "--address", addr, "--console-address", console, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+user, "MINIO_ROOT_PASSWORD="+password, "MINIO_BROWSER=off",
		"MINIO_UPDATE=off", "HOME="+t.TempDir())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// Ready when the liveness endpoint answers; the deadline is generous
	// for a loaded machine.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	probe := &http.Client{Transport: transport, Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := probe.Get("http://" + addr + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("minio exited before it was ready: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond): // poll interval, not a wait for the event
		}
		if time.Now().After(deadline) {
			t.Fatalf("minio not ready within 60s\n%s", out.String())
		}
	}

	client, err := minio.New(addr, &minio.Options{
		Creds:     credentials.NewStaticV4(user, password, ""),
		Region:    "us-east-1",
		Transport: transport,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.MakeBucket(context.Background(), testBucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return client
}

// freeAddr returns a 127.0.0.1 address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMinIOQueue writes 100,000 items through a Queue to a real MinIO, with
// gzip and without: every batch delivered is one object named by its hash,
// every item is in exactly one object, nothing is dropped.
func TestMinIOQueue(t *testing.T) {
	client := startMinIO(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			prefix := fmt.Sprintf("gzip-%v/", gz)
			w, err := New(Config{Client: client, Bucket: testBucket, Prefix: prefix, Gzip: gz})
			if err != nil {
				t.Fatal(err)
			}
			var dropped sync.Map
			q, err := vinequeue.New(vinequeue.Config[[]byte]{
				Send:          w.SendLines,
				BatchSize:     1000,
				Workers:       4,
				FlushInterval: 50 * time.Millisecond,
				OnDrop:        func(b [][]byte, reason error) { dropped.Store(len(b), reason) },
			})
			if err != nil {
				t.Fatal(err)
			}
			const producers, each = 4, 25000
			produceAndClose(t, q, producers, each)
			dropped.Range(func(n, reason any) bool {
				t.Errorf("dropped a batch of %d: %v", n, reason)
				return true
			})
			st := q.Stats()
			if st.Delivered != producers*each || st.Dropped != 0 {
				t.Fatalf("stats %+v: want %d delivered, 0 dropped", st, producers*each)
			}

			objs := (&fakeS3{client: client}).objects(t)
			n := 0
			seen := make(map[string]int, producers*each)
			for name, ls := range objs {
				if len(name) < len(prefix) || name[:len(prefix)] != prefix {
					continue
				}
				n++
				for _, l := range ls {
					seen[l]++
				}
			}
			if uint64(n) != st.Batches {
				t.Errorf("%d objects under %s for %d delivered batches", n, prefix, st.Batches)
			}
			for g := range producers {
				for _, item := range lines(fmt.Sprint("p", g), each) {
					if c := seen[string(item)]; c != 1 {
						t.Fatalf("item %s in %d objects, want 1", item, c)
					}
				}
			}
			t.Logf("%d items in %d objects", len(seen), n)
		})
	}
}

// TestMinIOMissingBucketIsFatal: a real server's NoSuchBucket is an error
// retrying cannot fix, so the queue gives the batch up at once.
func TestMinIOMissingBucketIsFatal(t *testing.T) {
	client := startMinIO(t)
	w, err := New(Config{Client: client, Bucket: "no-such-bucket"})
	if err != nil {
		t.Fatal(err)
	}
	err = w.SendLines(context.Background(), lines("x", 3))
	if !IsFatal(err) || !errors.Is(err, ErrFatal) {
		t.Fatalf("upload to a missing bucket: %v, want a fatal error", err)
	}
}
