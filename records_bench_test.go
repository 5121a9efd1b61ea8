package vinequeue

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// benchRecord stands for a sink's record (contrib/kafka's Record): a key, a
// value and headers, each a slice.
type benchRecord struct {
	Key, Value []byte
	Headers    []benchHeader
}

type benchHeader struct{ Key, Value []byte }

// benchRecordCodec encodes a benchRecord as contrib/kafka's RecordCodec
// does: a version byte, then the key, the value and the headers, each
// length-prefixed.
type benchRecordCodec struct{}

func (benchRecordCodec) Append(dst []byte, r benchRecord) ([]byte, error) {
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(r.Key))+1)
	dst = append(dst, r.Key...)
	dst = binary.AppendUvarint(dst, uint64(len(r.Value))+1)
	dst = append(dst, r.Value...)
	dst = binary.AppendUvarint(dst, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(h.Value))+1)
		dst = append(dst, h.Value...)
	}
	return dst, nil
}

func (benchRecordCodec) Decode(src []byte) (benchRecord, error) {
	var r benchRecord
	if len(src) < 1 {
		return r, fmt.Errorf("empty")
	}
	src = src[1:]
	field := func() []byte {
		n, k := binary.Uvarint(src)
		if k <= 0 || n == 0 || uint64(len(src)-k) < n-1 {
			src = nil
			return nil
		}
		b := src[k : k+int(n-1)]
		src = src[k+int(n-1):]
		return b
	}
	r.Key, r.Value = field(), field()
	return r, nil
}

// processCPU is the process's user+system CPU time.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Skip("no rusage:", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecords is the real job (benchmarks/realjob_test.go) without
// the broker: records of a 10-byte key and a 200-byte value over 10k keys,
// from P producer goroutines, until every record is delivered to a Send
// that walks each record's bytes (a stand-in for a client's
// serialisation). call=key is EnqueueKey with the key hashed by KeyOf in
// the call, as a service does; call=enqueue is Enqueue, for scale (memory
// mode only). mode is memory, or the WAL's Periodic or Sync mode. ns/op
// is wall time per record, cpu-ns/ev the process's CPU per record (every
// thread: producers, collector, senders, garbage collector; steadier than
// ns/op on a shared machine), both including Close.
//
// The producers outrun this sink and no Memory.Limit holds them back, so
// the queue builds a backlog until Close: the figures include the garbage
// collector's work on it, which grows as the calls get cheaper.
func BenchmarkRecords(b *testing.B) {
	value := make([]byte, 200)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	keys := make([][]byte, 10000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user-%05d", i)
	}
	var sink sync.Mutex
	var sum uint64
	send := func(_ context.Context, rs []benchRecord) error {
		var s uint64
		for _, r := range rs {
			for _, c := range r.Key {
				s += uint64(c)
			}
			for i := 0; i < len(r.Value); i += 8 {
				s += uint64(r.Value[i])
			}
		}
		sink.Lock()
		sum += s
		sink.Unlock()
		return nil
	}
	for _, c := range []struct{ call, mode string }{{"enqueue", "memory"}, {"key", "memory"}, {"key", "periodic"}, {"key", "sync"}} {
		call, mode := c.call, c.mode
		for _, P := range []int{32, 256} {
			b.Run(fmt.Sprintf("call=%s/mode=%s/producers=%d", call, mode, P), func(b *testing.B) {
				cfg := Config[benchRecord]{
					Send:          send,
					Workers:       8,
					FlushInterval: 10 * time.Millisecond,
					Codec:         benchRecordCodec{},
					SizeOf:        func(r benchRecord) int { return len(r.Key) + len(r.Value) + 64 },
				}
				switch mode {
				case "periodic":
					cfg.WAL = WALConfig{Dir: b.TempDir(), Mode: Periodic}
				case "sync":
					cfg.WAL = WALConfig{Dir: b.TempDir(), Mode: Sync}
				}
				q, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				events := max(b.N, P)
				per := events / P
				events = per * P
				var wg sync.WaitGroup
				start := make(chan struct{})
				for g := range P {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						for i := range per {
							k := (g*per + i) % len(keys)
							r := benchRecord{Key: keys[k], Value: value}
							var err error
							if call == "key" {
								err = q.EnqueueKey(KeyOf(unsafe.String(unsafe.SliceData(keys[k]), len(keys[k]))), r)
							} else {
								err = q.Enqueue(r)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				b.ResetTimer()
				cpu0 := processCPU(b)
				close(start)
				wg.Wait()
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu := processCPU(b) - cpu0
				st := q.Stats()
				if st.Delivered != uint64(events) {
					b.Fatalf("delivered %d of %d", st.Delivered, events)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/op")
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(events), "cpu-ns/ev")
				b.ReportMetric(float64(st.Delivered)/float64(max(st.Batches, 1)), "items/batch")
			})
		}
	}
}
