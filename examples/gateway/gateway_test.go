package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/vineroute/vinequeue/contrib/kafka"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("GATEWAY_TEST_CHILD") == "1" {
		// The child of TestSIGTERMDrains: the gateway itself, flags from
		// the environment.
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

func startTestGateway(t *testing.T) *gateway {
	t.Helper()
	g, err := start(config{
		Addr:         "127.0.0.1:0",
		Topic:        "events",
		Partitions:   3,
		WALDir:       t.TempDir(),
		SyncInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGatewayDeliversInKeyOrder boots the gateway on its in-process broker,
// posts events over HTTP, and reads every one back from the topic in per-key
// order; /healthz, /readyz and /metrics answer, and /readyz turns 503 while
// draining.
func TestGatewayDeliversInKeyOrder(t *testing.T) {
	g := startTestGateway(t)
	if code, _ := get(t, g.URL()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if code, body := get(t, g.URL()+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}

	res, err := runLoad(context.Background(), g, 600, 7)
	t.Log(res)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 600 || res.Accepted != 600 || res.Arrived != 600 || res.OutOfOrder != 0 {
		t.Fatalf("%v: want 600 sent, accepted and arrived, none out of order", res)
	}

	code, metrics := get(t, g.URL()+"/metrics")
	if code != http.StatusOK || !strings.Contains(metrics, "vinequeue_delivered_total 600") {
		t.Fatalf("/metrics: %d, want vinequeue_delivered_total 600 in:\n%s", code, metrics)
	}

	g.draining.Store(true) // what shutdown does first
	if code, _ := get(t, g.URL()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d, want 503", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPostRejectsWhenStopped: after the queue stopped, a post is refused
// with 503 and Retry-After, not accepted and lost.
func TestPostRejectsWhenStopped(t *testing.T) {
	g := startTestGateway(t)
	if err := g.q.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(g.URL()+"/events?key=a", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("post after Stop: %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if err := g.shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRecordCodecRoundTrip(t *testing.T) {
	for _, key := range []string{"", "k", strings.Repeat("x", 300)} {
		in := kafkaRecord(key, "value of "+key)
		b, err := recordCodec{}.Append(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := recordCodec{}.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Key, in.Key) || !bytes.Equal(out.Value, in.Value) {
			t.Fatalf("key %q: round trip gave %q/%q", key, out.Key, out.Value)
		}
	}
	if _, err := (recordCodec{}).Decode([]byte{0x05, 'a'}); err == nil {
		t.Fatal("a key length past the end decoded")
	}
}

// TestSIGTERMDrains runs the gateway as a child process on 127.0.0.1, posts
// events, sends SIGTERM, and reads the events back from the broker the child
// was pointed at: the drain delivered them before the process exited.
func TestSIGTERMDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	// The broker outlives the child, so the test can read what it got.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "drained"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GATEWAY_TEST_CHILD=1")
	cmd.Args = []string{"gateway", "-addr", "127.0.0.1:0", "-brokers", strings.Join(cluster.ListenAddrs(), ","),
		"-topic", "drained", "-wal", t.TempDir(), "-drain", "30s"}
	cmd.Path = os.Args[0]
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatalf("child printed nothing; stderr:\n%s", stderr.String())
	}
	// "gateway on http://127.0.0.1:PORT, ..."
	first := lines.Text()
	url, _, _ := strings.Cut(strings.TrimPrefix(first, "gateway on "), ",")
	const n = 200
	for i := range n {
		resp, err := http.Post(url+"/events?key=k"+strconv.Itoa(i%5), "text/plain", strings.NewReader(fmt.Sprintf("k%d/%d", i%5, i/5)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post %d: %d", i, resp.StatusCode)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
	}
	got, err := consume(context.Background(), cluster.ListenAddrs(), "drained", n, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	distinct := make(map[string]bool)
	for _, r := range got {
		distinct[string(r.Value)] = true
	}
	if len(distinct) != n {
		t.Fatalf("%d distinct of %d events reached the broker after SIGTERM", len(distinct), n)
	}
}

// TestLoadFlag: -load posts, reads back and prints both counts, then the
// gateway drains and run returns.
func TestLoadFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0", "-wal", t.TempDir(), "-load", "300", "-load-keys", "4"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "load: sent 300, accepted 300, arrived 300 (duplicates 0, out of per-key order 0)") {
		t.Fatalf("-load printed:\n%s", stdout.String())
	}
}

func kafkaRecord(key, value string) kafka.Record {
	r := kafka.Record{Value: []byte(value)}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}
