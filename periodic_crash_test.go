package vinequeue_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	vq "github.com/vineroute/vinequeue"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

// lazyChildEnv names the WAL directory a TestPeriodicCrashHeldSendReplays
// child runs on.
const lazyChildEnv = "VINEQUEUE_LAZY_CHILD"

const (
	lazyKeys     = 8
	lazyPerWave  = 5
	lazyUnkeyed  = 20
	lazyReadyMsg = "READY"
)

// lazyConfig is the child's and the parent's queue on dir.
func lazyConfig(dir string, send vq.SendFunc[[]byte]) vq.Config[[]byte] {
	return vq.Config[[]byte]{
		Send:          send,
		BatchSize:     64,
		Workers:       2,
		FlushInterval: 5 * time.Millisecond,
		WAL:           vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: 20 * time.Millisecond},
	}
}

// lazyChild delivers a first wave of keyed items (Send returns nil), then
// holds every later batch in Send: a second wave of keyed and unkeyed
// items, and a third wave of the same keys that waits in the shards behind
// the second. Once DurableThrough has passed the last call it says so on
// stdout and waits for its SIGKILL.
func lazyChild(dir string) {
	keyedInSend := make(chan struct{}, 2)
	q, err := vq.New(lazyConfig(dir, func(ctx context.Context, b [][]byte) error {
		if bytes.HasPrefix(b[0], []byte("0/")) {
			return nil
		}
		if !bytes.HasPrefix(b[0], []byte("1/u/")) {
			keyedInSend <- struct{}{}
		}
		<-ctx.Done()
		return ctx.Err()
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		os.Exit(2)
	}
	enqueue := func(wave int) {
		for s := range lazyPerWave {
			for k := range lazyKeys {
				if err := q.EnqueueKey(uint64(k), fmt.Appendf(nil, "%d/%d/%d", wave, k, wave*lazyPerWave+s)); err != nil {
					fmt.Fprintln(os.Stderr, "EnqueueKey:", err)
					os.Exit(2)
				}
			}
		}
	}
	enqueue(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Flush:", err)
		os.Exit(2)
	}
	enqueue(1)
	for i := range lazyUnkeyed {
		if err := q.Enqueue(fmt.Appendf(nil, "1/u/%d", i)); err != nil {
			fmt.Fprintln(os.Stderr, "Enqueue:", err)
			os.Exit(2)
		}
	}
	// The second wave goes into Send (and stays there) before the third
	// comes, so that the third waits in the shards behind it.
	<-keyedInSend
	enqueue(2)
	last := time.Now()
	for !q.Stats().DurableThrough.After(last) {
		time.Sleep(time.Millisecond) // polling; the parent's deadline bounds it
	}
	fmt.Println(lazyReadyMsg)
	select {}
}

// TestPeriodicCrashHeldSendReplays: Periodic mode writes a batch only if a
// checkpoint finds it undelivered. A child delivers a first wave (never
// written), holds a second wave in Send, and queues a third behind it;
// once DurableThrough passes the last call, it is SIGKILLed. The next New
// replays exactly the second and third waves (what was held in Send is on
// disk), each key's items in their order, and nothing of the first.
func TestPeriodicCrashHeldSendReplays(t *testing.T) {
	if dir := os.Getenv(lazyChildEnv); dir != "" {
		lazyChild(dir)
		return
	}
	dir := t.TempDir()
	crashtest.KillWhenReady(t, "TestPeriodicCrashHeldSendReplays", lazyReadyMsg, lazyChildEnv+"="+dir)

	var mu sync.Mutex
	var got []string
	q, err := vq.New(lazyConfig(dir, func(_ context.Context, b [][]byte) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			got = append(got, string(it))
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	flushThenClose(t, q, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]int{}
	lastOf := map[string]int{}
	for _, it := range got {
		seen[it]++
		var wave, seq int
		var key string
		if _, err := fmt.Sscanf(strings.ReplaceAll(it, "/", " "), "%d %s %d", &wave, &key, &seq); err != nil {
			t.Fatalf("item %q: %v", it, err)
		}
		if wave == 0 {
			t.Errorf("item %s of the wave delivered before the crash replayed", it)
		}
		if key != "u" {
			if l, ok := lastOf[key]; ok && seq < l {
				t.Errorf("key %s: seq %d replayed after seq %d", key, seq, l)
			}
			lastOf[key] = seq
		}
	}
	want := 2*lazyKeys*lazyPerWave + lazyUnkeyed
	for wave := 1; wave <= 2; wave++ {
		for k := range lazyKeys {
			for s := range lazyPerWave {
				it := fmt.Sprintf("%d/%d/%d", wave, k, wave*lazyPerWave+s)
				if seen[it] != 1 {
					t.Errorf("item %s replayed %d times; want once", it, seen[it])
				}
			}
		}
	}
	for i := range lazyUnkeyed {
		if it := fmt.Sprintf("1/u/%d", i); seen[it] != 1 {
			t.Errorf("item %s replayed %d times; want once", it, seen[it])
		}
	}
	if len(got) != want {
		t.Errorf("%d items replayed; want %d", len(got), want)
	}
}
