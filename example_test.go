package vinequeue_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/vineroute/vinequeue"
)

// Items of one key are delivered in the order they were accepted, whatever
// the number of Workers.
func ExampleQueue_EnqueueKey() {
	type event struct {
		user uint64
		what string
	}
	var mu sync.Mutex
	perUser := map[uint64][]string{}
	q, err := vinequeue.New(vinequeue.Config[event]{
		Send: func(_ context.Context, batch []event) error {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range batch {
				perUser[ev.user] = append(perUser[ev.user], ev.what)
			}
			return nil
		},
		Workers: 4,
	})
	if err != nil {
		panic(err)
	}
	for _, ev := range []event{{1, "login"}, {2, "login"}, {1, "view"}, {2, "buy"}, {1, "logout"}} {
		_ = q.EnqueueKey(ev.user, ev) // FIFO per user
	}
	if err := q.Close(); err != nil {
		panic(err)
	}
	fmt.Println(perUser[1], perUser[2])
	// Output:
	// [login view logout] [login buy]
}

// With a WAL in Sync mode, Enqueue returns once the item is on disk; a crash
// loses nothing accepted, and the next New replays what was not delivered.
func ExampleNew_wal() {
	dir, err := os.MkdirTemp("", "vinequeue-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	var mu sync.Mutex
	var got []string
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: func(_ context.Context, batch [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, b := range batch {
				got = append(got, string(b)) // copy: batch is reused after Send
			}
			return nil
		},
		WAL: vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Sync, SegmentSize: 1 << 20},
	})
	if err != nil {
		panic(err)
	}
	for _, ev := range []string{"a", "b", "c"} {
		if err := q.Enqueue([]byte(ev)); err != nil { // nil: durable
			panic(err)
		}
	}
	if err := q.Close(); err != nil {
		panic(err)
	}
	sort.Strings(got)
	fmt.Println(got, q.Stats().Delivered)
	// Output:
	// [a b c] 3
}
