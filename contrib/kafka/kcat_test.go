package kafka

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vineroute/vinequeue"
)

// TestKcatReadsWhatTheQueueWrote checks the sink against another Kafka
// client: records go through EnqueueKey and a Producer into kfake on
// 127.0.0.1, and kcat (librdkafka) consumes them. Every record must arrive
// once, in the partition murmur2 gives its key, with each key's records in
// the order they were enqueued. It needs kcat on PATH (Debian: apt-get
// install kcat) and skips without it.
func TestKcatReadsWhatTheQueueWrote(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not on PATH (Debian/Ubuntu: apt-get install kcat): the librdkafka cross-check did not run")
	}
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	q, err := vinequeue.New(vinequeue.Config[Record]{
		SizeOf:        RecordSize,
		Send:          p.SendRecords,
		BatchSize:     100,
		Workers:       4,
		FlushInterval: 5 * time.Millisecond,
		OnDrop:        func(batch []Record, reason error) { t.Errorf("dropped %d records: %v", len(batch), reason) },
	})
	if err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 50, 40
	for seq := range perKey {
		for k := range keys {
			key := fmt.Appendf(nil, "user-%d", k)
			if err := q.EnqueueKey(QueueKey(key), Record{Key: key, Value: fmt.Appendf(nil, "%s:%d", key, seq)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := c.ListenAddrs()[0]
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("kfake listens on %s, want 127.0.0.1", addr)
	}
	cmd := exec.CommandContext(ctx, kcat, "-b", addr, "-C", "-t", testTopic, "-o", "beginning", "-e", "-q",
		"-f", `%k %p %o %s\n`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, stderr.String())
	}

	next := make(map[string]int)        // key -> next seq
	lastOffset := make(map[int32]int64) // partition -> last offset read
	sc := bufio.NewScanner(bytes.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		f := strings.Fields(sc.Text())
		if len(f) != 4 {
			t.Fatalf("kcat line %q: want key partition offset value", sc.Text())
		}
		key, value := f[0], f[3]
		part, err1 := strconv.ParseInt(f[1], 10, 32)
		off, err2 := strconv.ParseInt(f[2], 10, 64)
		vkey, seqText, ok := strings.Cut(value, ":")
		seq, err3 := strconv.Atoi(seqText)
		if err1 != nil || err2 != nil || err3 != nil || !ok || vkey != key {
			t.Fatalf("kcat line %q does not parse", sc.Text())
		}
		if want := partitionOf([]byte(key)); int32(part) != want {
			t.Errorf("key %s in partition %d, murmur2 gives %d", key, part, want)
		}
		if last, seen := lastOffset[int32(part)]; seen && off <= last {
			t.Errorf("partition %d: offset %d after %d", part, off, last)
		}
		lastOffset[int32(part)] = off
		if seq != next[key] {
			t.Fatalf("key %s: seq %d at partition %d offset %d, want %d", key, seq, part, off, next[key])
		}
		next[key]++
	}
	if lines != keys*perKey || len(next) != keys {
		t.Fatalf("kcat read %d records of %d keys, want %d of %d", lines, len(next), keys*perKey, keys)
	}
	t.Logf("kcat read %d records over %d partitions, per-key order and murmur2 partitions intact", lines, len(lastOffset))
}
