package wal_test

import (
	"fmt"
	"os"

	"github.com/vineroute/vinequeue/wal"
)

// A queue's life with its WAL: recover and replay what was not delivered,
// append durably, acknowledge what was delivered.
func Example() {
	dir, _ := os.MkdirTemp("", "wal-example")
	defer os.RemoveAll(dir)

	l, err := wal.Open(dir, wal.Options{SegmentSize: 1 << 20})
	if err != nil {
		panic(err)
	}
	// Durable on return; concurrent callers share the record and the sync.
	id, _ := l.AppendItem([]byte(`{"ev":"click"}`))
	id2, _ := l.AppendItems([][]byte{[]byte(`{"ev":"view"}`), []byte(`{"ev":"buy"}`)})
	_ = l.AckRange(id, 0, 1)  // the click was delivered
	_ = l.AckRange(id2, 0, 1) // so was the view; the buy was not
	l.Close()

	l, _ = wal.Open(dir, wal.Options{SegmentSize: 1 << 20})
	fmt.Println("items pending:", l.Stats().ItemsPending)
	_ = l.Replay(func(rec uint64, payload []byte, done []wal.ItemRange) error {
		i := 0
		return wal.ForEachItem(payload, func(item []byte) error {
			defer func() { i++ }()
			for _, d := range done {
				if i >= d.Off && i < d.Off+d.N {
					return nil // delivered before the restart
				}
			}
			fmt.Printf("replayed %s, item %d of record %d\n", item, i, rec)
			return l.AckRange(rec, i, 1)
		})
	})
	fmt.Println("items pending:", l.Stats().ItemsPending, "corrupt:", l.Stats().Corrupt)
	l.Close()
	// Output:
	// items pending: 1
	// replayed {"ev":"buy"}, item 1 of record 2
	// items pending: 0 corrupt: 0
}
