package vinequeue_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vq "github.com/vineroute/vinequeue"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

// The child of TestCrashParkKeysDeadLetterFull: k/0 fails for good while
// unkeyed items the sink holds fill the WAL, so it waits for room for its
// dead letter with k/1 behind it; once that is so it prints parkFullReady,
// then, after a random moment, lets the unkeyed items go (room frees, k/0's
// dead letter is written, k/1 parks behind it) until it is killed. Its log
// (one write per event, after the call it reports returned; D just before
// Send returns nil):
//
//	A <item>   Enqueue or EnqueueKey returned nil for item
//	D <item>   Send is about to return nil for a batch holding item
const parkFullChildEnv = "VINEQUEUE_PARKFULL_CHILD"

const parkFullReady = "PARKFULL-READY"

func parkFullConfig(dir string, send vq.SendFunc[[]byte], logger *slog.Logger) vq.Config[[]byte] {
	return vq.Config[[]byte]{
		Send: send, Logger: logger, BatchSize: 4, Workers: 2, FlushInterval: 5 * time.Millisecond,
		Retry:    vq.RetryPolicy{MaxAttempts: 1},
		ParkKeys: true,
		WAL: vq.WALConfig{Dir: dir, Mode: vq.Sync, SegmentSize: 64 << 10, MaxBytes: 128 << 10,
			Compression: vq.NoCompression},
	}
}

// parkFullName is an item's name: the item, without an unkeyed one's pad.
func parkFullName(it []byte) []byte { return it[:min(len(it), len("p/00000000"))] }

func parkFullChild(dir, logPath string) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		os.Exit(2)
	}
	emit := func(kind string, it []byte) { f.Write(fmt.Appendf(nil, "%s %s\n", kind, it)) } // a copy: it is the queue's
	k0In, k0Go, plainGo := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var k0Once sync.Once
	send := func(ctx context.Context, b [][]byte) error {
		switch {
		case bytes.Equal(b[0], []byte("k/0")):
			k0Once.Do(func() { close(k0In) })
			<-k0Go
			return vq.Permanent(errors.New("poison"))
		case bytes.HasPrefix(b[0], []byte("p/")):
			select {
			case <-plainGo:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, it := range b {
			emit("D", parkFullName(it))
		}
		return nil
	}
	var waits atomic.Int64
	q, err := vq.New(parkFullConfig(dir, send, slog.New(&matchHandler{match: "waits for room", n: &waits})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		os.Exit(2)
	}
	enqueue := func(k uint64, it []byte) {
		if err := q.EnqueueKey(k, it); err != nil {
			fmt.Fprintln(os.Stderr, "EnqueueKey:", err)
			os.Exit(2)
		}
		emit("A", it)
	}
	enqueue(1, []byte("k/0"))
	<-k0In
	enqueue(1, []byte("k/1"))
	pad := bytes.Repeat([]byte{'x'}, 2000)
	for i := 0; ; i++ {
		it := fmt.Appendf(nil, "p/%08d/", i)
		it = append(it, pad...)
		err := q.Enqueue(it)
		if errors.Is(err, vq.ErrWALFull) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "Enqueue:", err)
			os.Exit(2)
		}
		emit("A", parkFullName(it))
	}
	close(k0Go)
	for waits.Load() == 0 && q.Stats().LeftOnDisk+q.Stats().DeadLettered+q.Stats().Dropped == 0 {
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
	fmt.Println(parkFullReady)
	time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond) // a random moment: the kill may come before or after
	close(plainGo)
	select {} // until killed
}

// TestCrashParkKeysDeadLetterFull: SIGKILL at a random moment while a
// keyed batch, failed for good, waits for room for its dead letter with its
// key's later item behind it, or while room frees and it is written and the
// later item parks: the next queue loses no accepted item and delivers k/0
// (requeued) before k/1.
func TestCrashParkKeysDeadLetterFull(t *testing.T) {
	if dir := os.Getenv(parkFullChildEnv); dir != "" {
		parkFullChild(dir, os.Getenv(parkFullChildEnv+"_LOG"))
	}
	for round := range 3 {
		dir := t.TempDir()
		logPath := filepath.Join(t.TempDir(), "log")
		killAt := make(chan struct{})
		var ready sync.Once
		c := crashtest.Start(t, "TestCrashParkKeysDeadLetterFull", func(line string) {
			if line == parkFullReady {
				ready.Do(func() {
					time.AfterFunc(time.Duration(rand.IntN(80))*time.Millisecond, func() { close(killAt) })
				})
			}
		}, parkFullChildEnv+"="+dir, parkFullChildEnv+"_LOG="+logPath)
		c.KillWhen(killAt)
		if s := c.Crashed("New:", "Enqueue"); s != "" {
			t.Fatalf("round %d: child: %s", round, s)
		}
		accepted := map[string]bool{}
		var order []string // keyed items, first deliveries in order
		delivered := map[string]bool{}
		deliver := func(it string) {
			if strings.HasPrefix(it, "k/") && !delivered[it] {
				order = append(order, it)
			}
			delivered[it] = true
		}
		f, err := os.Open(logPath)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			kind, it, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue // cut short by the kill
			}
			switch kind {
			case "A":
				accepted[it] = true
			case "D":
				deliver(it)
			}
		}
		f.Close()
		childOrder := append([]string(nil), order...)

		var mu sync.Mutex
		q, err := vq.New(parkFullConfig(dir, func(_ context.Context, b [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, it := range b {
				deliver(string(parkFullName(it)))
			}
			return nil
		}, nil))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			requeueThenFlush(t, q)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		t.Logf("round %d: %d accepted; keyed delivered in the child %v, in all %v", round, len(accepted), childOrder, order)
		for it := range accepted {
			if !delivered[it] {
				t.Errorf("round %d: %s accepted, never delivered", round, it)
			}
		}
		if len(order) != 2 || order[0] != "k/0" || order[1] != "k/1" {
			t.Errorf("round %d: keyed items delivered in the order %v, want [k/0 k/1]", round, order)
		}
		mu.Unlock()
	}
}
