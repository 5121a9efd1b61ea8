package vinequeue

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vineroute/vinequeue/internal/engine"
)

// TestWALConfigDoesNotLie: a durable Mode without a Dir used to run memory
// only while Enqueue's nil claimed durability; a Dir without a Mode used to
// give Overflow (no crash durability).
func TestWALConfigDoesNotLie(t *testing.T) {
	ok := func(context.Context, []string) error { return nil }
	for _, mode := range []WALMode{Overflow, Periodic, Sync} {
		_, err := New(Config[string]{Send: ok, WAL: WALConfig{Mode: mode}})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "WAL.Dir") {
			t.Errorf("Mode %v without Dir: New = %v, want ErrInvalidConfig naming WAL.Dir", mode, err)
		}
	}
	cfg := Config[string]{Send: ok, WAL: WALConfig{Dir: t.TempDir(), SegmentSize: 1 << 20}}
	ec, err := cfg.engine()
	if err != nil {
		t.Fatal(err)
	}
	if ec.WAL.Mode != engine.Periodic {
		t.Fatalf("a Dir without a Mode runs %v, want periodic", WALMode(ec.WAL.Mode))
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestEnumsAsText: the API's enumerations print as names in JSON and parse
// back; an unknown name is an error, not a zero value.
func TestEnumsAsText(t *testing.T) {
	type doc struct {
		Level       Level
		Policy      Policy
		Mode        WALMode
		Compression Compression
		Measure     Measure
	}
	in := doc{LevelHard, Block, Sync, LZ4, MeasureQueue}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"Level":"hard","Policy":"block","Mode":"sync","Compression":"lz4","Measure":"queue-bytes"}`
	if string(b) != want {
		t.Fatalf("json %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	var m WALMode
	if err := m.UnmarshalText([]byte("fast")); !errors.Is(err, ErrUnknownName) {
		t.Fatalf("UnmarshalText(fast) = %v, want ErrUnknownName", err)
	}
}
