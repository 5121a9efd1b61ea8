package s3

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/vineroute/vinequeue"
	"go.uber.org/goleak"
)

// Every test closes its server and idle connections; goleak checks that no
// HTTP goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testBucket = "batches"

// fakeS3 is an in-process S3 (gofakes3, memory backend) on 127.0.0.1 with
// testBucket, and a minio client for it. Before runs in front of the fake
// for every request; it returns true when it answered the request itself.
type fakeS3 struct {
	client *minio.Client
	before atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	puts   atomic.Int32 // object PUTs that reached the fake
}

// newFakeS3 starts the server. transport wraps the client's transport
// (nil: none); minio's own retries are off (MaxRetries 1) so that failures
// reach the send, as they would after minio gave up.
func newFakeS3(t testing.TB, transport func(http.RoundTripper) http.RoundTripper) *fakeS3 {
	t.Helper()
	f := &fakeS3{}
	backend := gofakes3.New(s3mem.New()).Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if before := f.before.Load(); before != nil && (*before)(w, r) {
			return
		}
		if r.Method == http.MethodPut && strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1 {
			f.puts.Add(1)
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	base := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(base.CloseIdleConnections)
	var rt http.RoundTripper = base
	if transport != nil {
		rt = transport(base)
	}
	client, err := minio.New(strings.TrimPrefix(srv.URL, "http://"), &minio.Options{
		Creds:      credentials.NewStaticV4("test-key", "test-secret", ""),
		Region:     "us-east-1",
		Transport:  rt,
		MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.MakeBucket(context.Background(), testBucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	f.client = client
	return f
}

func (f *fakeS3) setBefore(fn func(w http.ResponseWriter, r *http.Request) bool) { f.before.Store(&fn) }

func newWriter(t testing.TB, f *fakeS3, cfg Config) *Writer {
	t.Helper()
	cfg.Client, cfg.Bucket = f.client, testBucket
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// objects returns every object of testBucket: name → decoded lines.
func (f *fakeS3) objects(t testing.TB) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := make(map[string][]string)
	for info := range f.client.ListObjects(ctx, testBucket, minio.ListObjectsOptions{Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		obj, err := f.client.GetObject(ctx, testBucket, info.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = obj
		if strings.HasSuffix(info.Key, ".gz") {
			zr, err := gzip.NewReader(obj)
			if err != nil {
				t.Fatalf("%s: %v", info.Key, err)
			}
			r = zr
		}
		raw, err := io.ReadAll(r)
		obj.Close()
		if err != nil {
			t.Fatalf("%s: %v", info.Key, err)
		}
		sum := sha256.Sum256(raw)
		defaultName := strings.HasSuffix(info.Key, ".ndjson") || strings.HasSuffix(info.Key, ".ndjson.gz")
		if defaultName && !strings.Contains(info.Key, hex.EncodeToString(sum[:])) {
			t.Errorf("object %s does not carry the hash of its payload %x", info.Key, sum)
		}
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		out[info.Key] = lines
	}
	return out
}

func lines(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"event":"%s-%d"}`, prefix, i)
	}
	return out
}

func asStrings(b [][]byte) []string {
	out := make([]string, len(b))
	for i, v := range b {
		out[i] = string(v)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			f := newFakeS3(t, nil)
			w := newWriter(t, f, Config{Prefix: "events/", Gzip: gz})
			batches := [][][]byte{lines("a", 3), lines("b", 100), lines("c", 1)}
			want := make(map[string][]string)
			for _, b := range batches {
				if err := w.SendLines(context.Background(), b); err != nil {
					t.Fatal(err)
				}
				payload := []byte(strings.Join(asStrings(b), "\n") + "\n")
				want[w.Name(payload)] = asStrings(b)
			}
			got := f.objects(t)
			if len(got) != len(want) {
				t.Fatalf("%d objects, want %d: %v", len(got), len(want), slices.Collect(maps.Keys(got)))
			}
			for name, lines := range want {
				if !strings.HasPrefix(name, "events/") || !strings.HasSuffix(name, map[bool]string{false: ".ndjson", true: ".ndjson.gz"}[gz]) {
					t.Errorf("unexpected name %s", name)
				}
				if !slices.Equal(got[name], lines) {
					t.Errorf("%s: %d lines %q, want %q", name, len(got[name]), got[name], lines)
				}
			}
			stat, err := f.client.StatObject(context.Background(), testBucket, w.Name([]byte(`{"event":"c-0"}`+"\n")), minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if items := stat.UserMetadata["Items"]; items != "1" {
				t.Errorf("Items metadata %q, want 1", items)
			}
		})
	}
}

// lostAck passes the first `lose` object PUTs to the server and then, after
// the server stored the object, fails them as a dropped connection would:
// the sender cannot tell the upload happened.
type lostAck struct {
	next http.RoundTripper
	lose atomic.Int32
	lost atomic.Int32
}

func (l *lostAck) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err != nil || r.Method != http.MethodPut || strings.Count(strings.Trim(r.URL.Path, "/"), "/") < 1 {
		return resp, err
	}
	if l.lose.Add(-1) < 0 {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	l.lost.Add(1)
	return nil, errors.New("connection reset by peer (injected after the server stored the object)")
}

// TestRetriedBatchLeavesNoDuplicate: an upload whose ack was lost is retried
// by the queue-like driver; the retry overwrites the same object.
func TestRetriedBatchLeavesNoDuplicate(t *testing.T) {
	lost := &lostAck{}
	lost.lose.Store(1)
	f := newFakeS3(t, func(next http.RoundTripper) http.RoundTripper { lost.next = next; return lost })
	w := newWriter(t, f, Config{Gzip: true})
	batch := lines("x", 50)
	err := w.SendLines(context.Background(), batch)
	if err == nil || IsFatal(err) {
		t.Fatalf("first attempt: err = %v, want a retryable error", err)
	}
	if err := w.SendLines(context.Background(), batch); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := f.puts.Load(); n != 2 {
		t.Fatalf("%d PUTs reached the server, want 2 (the lost one and the retry)", n)
	}
	got := f.objects(t)
	if len(got) != 1 {
		t.Fatalf("%d objects after a retried batch, want 1: %v", len(got), slices.Collect(maps.Keys(got)))
	}
	for _, l := range got {
		if !slices.Equal(l, asStrings(batch)) {
			t.Fatalf("object holds %d lines, want the batch's %d", len(l), len(batch))
		}
	}
}

// TestQueueEndToEnd runs a real queue into the Writer with lost acks on the
// way: every item is in exactly one object, one object per delivered batch.
func TestQueueEndToEnd(t *testing.T) {
	lost := &lostAck{}
	lost.lose.Store(2)
	f := newFakeS3(t, func(next http.RoundTripper) http.RoundTripper { lost.next = next; return lost })
	w := newWriter(t, f, Config{Prefix: "q/"})
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send:          w.SendLines,
		BatchSize:     100,
		Workers:       2,
		FlushInterval: 10 * time.Millisecond,
		Retry:         vinequeue.RetryPolicy{MaxAttempts: 10, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		OnDrop:        func(b [][]byte, reason error) { t.Errorf("dropped %d items: %v", len(b), reason) },
	})
	if err != nil {
		t.Fatal(err)
	}
	const producers, each = 4, 250
	produceAndClose(t, q, producers, each)
	st := q.Stats()
	if st.Delivered != producers*each || st.Retries < 2 {
		t.Errorf("stats %+v: want %d delivered and at least 2 retries", st, producers*each)
	}
	if n := lost.lost.Load(); n != 2 {
		t.Errorf("%d acks lost, want 2", n)
	}
	objs := f.objects(t)
	if uint64(len(objs)) != st.Batches {
		t.Errorf("%d objects for %d delivered batches", len(objs), st.Batches)
	}
	seen := make(map[string]int)
	for _, ls := range objs {
		for _, l := range ls {
			seen[l]++
		}
	}
	for g := range producers {
		for _, item := range lines(fmt.Sprint("p", g), each) {
			if n := seen[string(item)]; n != 1 {
				t.Errorf("item %s in %d objects, want 1", item, n)
			}
		}
	}
	if len(seen) != producers*each {
		t.Errorf("%d distinct lines stored, want %d", len(seen), producers*each)
	}
}

func TestServerErrorIsRetryable(t *testing.T) {
	f := newFakeS3(t, nil)
	var failed atomic.Bool
	f.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && failed.CompareAndSwap(false, true) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return true
		}
		return false
	})
	w := newWriter(t, f, Config{})
	err := w.SendLines(context.Background(), lines("s", 2))
	if err == nil || IsFatal(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if err := w.SendLines(context.Background(), lines("s", 2)); err != nil {
		t.Fatal(err)
	}
}

func TestFatalErrors(t *testing.T) {
	f := newFakeS3(t, nil)
	t.Run("missing bucket", func(t *testing.T) {
		w, err := New(Config{Client: f.client, Bucket: "no-such-bucket"})
		if err != nil {
			t.Fatal(err)
		}
		err = w.SendLines(context.Background(), lines("m", 1))
		var resp minio.ErrorResponse
		if !IsFatal(err) || !errors.As(err, &resp) || resp.Code != "NoSuchBucket" {
			t.Fatalf("err = %v, want fatal NoSuchBucket", err)
		}
	})
	t.Run("newline in item", func(t *testing.T) {
		w := newWriter(t, f, Config{})
		err := w.SendLines(context.Background(), [][]byte{[]byte("ok"), []byte("two\nlines")})
		if !IsFatal(err) || !strings.Contains(err.Error(), "item 1 of 2 contains a newline") {
			t.Fatalf("err = %v, want fatal newline error", err)
		}
	})
	t.Run("encode error", func(t *testing.T) {
		errBad := errors.New("bad")
		send := SendFuncOf(newWriter(t, f, Config{}), func(dst []byte, v int) ([]byte, error) { return dst, errBad })
		if err := send(context.Background(), []int{1}); !IsFatal(err) || !errors.Is(err, errBad) {
			t.Fatalf("err = %v, want fatal wrapping the encode error", err)
		}
	})
	if objs := f.objects(t); len(objs) != 0 {
		t.Fatalf("failed batches left objects: %v", slices.Collect(maps.Keys(objs)))
	}
}

func TestObjectNameAndEmptyBatch(t *testing.T) {
	f := newFakeS3(t, nil)
	w := newWriter(t, f, Config{ObjectName: func(sum [sha256.Size]byte) string {
		return fmt.Sprintf("dt=fixed/%x.log", sum[:4])
	}})
	if err := w.SendLines(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	send := SendFuncOf(w, func(dst []byte, v int) ([]byte, error) { return fmt.Appendf(dst, "%d", v), nil })
	if err := send(context.Background(), []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("1\n2\n"))
	want := fmt.Sprintf("dt=fixed/%x.log", sum[:4])
	objs := f.objects(t)
	if len(objs) != 1 || !slices.Equal(objs[want], []string{"1", "2"}) {
		t.Fatalf("objects %v, want %s with lines 1, 2", objs, want)
	}
}

func TestNewInvalidConfig(t *testing.T) {
	f := newFakeS3(t, nil)
	if _, err := New(Config{Bucket: "b"}); !errors.Is(err, vinequeue.ErrInvalidConfig) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := New(Config{Client: f.client}); !errors.Is(err, vinequeue.ErrInvalidConfig) {
		t.Errorf("no bucket: %v", err)
	}
}

// produceAndClose enqueues each lines from each of producers goroutines,
// then closes q (everything accepted is delivered).
func produceAndClose(t *testing.T, q *vinequeue.Queue[[]byte], producers, each int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			for _, item := range lines(fmt.Sprint("p", g), each) {
				if err := q.Enqueue(item); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
