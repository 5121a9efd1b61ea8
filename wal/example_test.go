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
	_ = l.AckItems(id, 1) // the click was delivered
	l.Close()             // id2 was not

	l, _ = wal.Open(dir, wal.Options{SegmentSize: 1 << 20})
	_ = l.Replay(func(rec uint64, payload []byte) error {
		return wal.ForEachItem(payload, func(item []byte) error {
			fmt.Printf("replayed %s from record %d\n", item, rec)
			return nil
		})
	})
	_ = l.Ack(id2)
	fmt.Println("corrupt:", l.Stats().Corrupt)
	l.Close()
	// Output:
	// replayed {"ev":"view"} from record 2
	// replayed {"ev":"buy"} from record 2
	// corrupt: 0
}
