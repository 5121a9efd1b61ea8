package vinequeue

import (
	"context"
	"fmt"
	"hash/crc32"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The benchmarks here are the ones issue 2 names; benchmarks/ (its own
// module) puts the queue beside peer libraries.

func noopSend(context.Context, []uint64) error { return nil }

func newBenchQueue(b *testing.B) *Queue[uint64] {
	q, err := New(Config[uint64]{Send: noopSend, BatchSize: 1000, RingSize: 8192})
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// BenchmarkEnqueue: one goroutine, the consumer running.
func BenchmarkEnqueue(b *testing.B) {
	q := newBenchQueue(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.Enqueue(uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

// BenchmarkEnqueueParallel: 64 goroutines (RunParallel with parallelism
// 64/GOMAXPROCS), ns/op is per item.
func BenchmarkEnqueueParallel(b *testing.B) {
	q := newBenchQueue(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := uint64(0); pb.Next(); i++ {
			if err := q.Enqueue(i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEnqueueBatch100: EnqueueBatch of 100 items; ns/op is per item.
func BenchmarkEnqueueBatch100(b *testing.B) {
	q := newBenchQueue(b)
	vs := make([]uint64, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(vs) {
		n := min(len(vs), b.N-i)
		if _, err := q.EnqueueBatch(vs[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
}

// chanPipeline is the baseline: a buffered channel and a consumer goroutine
// that batches like the queue does.
func chanPipeline(b *testing.B) (chan uint64, func()) {
	ch := make(chan uint64, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		batch := make([]uint64, 0, 1000)
		for v := range ch {
			batch = append(batch, v)
			if len(batch) == cap(batch) {
				noopSend(context.Background(), batch)
				batch = batch[:0]
			}
		}
		noopSend(context.Background(), batch)
	}()
	return ch, func() { close(ch); <-done }
}

// BenchmarkChannel: the same work as BenchmarkEnqueue on a buffered channel.
func BenchmarkChannel(b *testing.B) {
	ch, stop := chanPipeline(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ch <- uint64(i)
	}
	stop()
}

// BenchmarkChannelParallel: the same work as BenchmarkEnqueueParallel.
func BenchmarkChannelParallel(b *testing.B) {
	ch, stop := chanPipeline(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := uint64(0); pb.Next(); i++ {
			ch <- i
		}
	})
	stop()
}

// BenchmarkEnqueueKey: one goroutine over 10k keys, the consumer running.
func BenchmarkEnqueueKey(b *testing.B) {
	q := newBenchQueue(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.EnqueueKey(uint64(i%10000), uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

// BenchmarkEnqueueKeyParallel: 64 goroutines over 10k keys, as
// BenchmarkEnqueueParallel; ns/op is per item.
func BenchmarkEnqueueKeyParallel(b *testing.B) {
	q := newBenchQueue(b)
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := next.Add(7919)
		for i := uint64(0); pb.Next(); i++ {
			if err := q.EnqueueKey((key+i)%10000, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	if st := q.Stats(); st.Delivered != st.Enqueued {
		b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
	}
}

// benchRecord is shaped like a Kafka record (contrib/kafka.Record without
// headers): two slices, weighed with the bytes behind them.
type benchRecord struct {
	Key, Value []byte
}

func benchRecordSize(r benchRecord) int {
	return int(unsafe.Sizeof(r)) + len(r.Key) + len(r.Value)
}

// benchRecordSend does a little per-record work, as a sink that encodes
// and checksums its records would (the Kafka sink: a CRC-32C per batch of
// records), so that the consumer side competes for the CPUs as in a real
// job rather than returning at once.
func benchRecordSend(_ context.Context, rs []benchRecord) error {
	var sum uint32
	for i := range rs {
		sum = crc32.Update(sum, castagnoli, rs[i].Value)
	}
	benchSink.Add(uint64(sum))
	return nil
}

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	benchSink  atomic.Uint64
)

// BenchmarkEnqueueKeyRecord is the real job's intake (benchmarks/realjob*)
// without the broker: records of a 200-byte value over 10k string keys
// hashed by KeyOf in the call, SizeOf counting the slices' bytes, Workers
// 8, FlushInterval 10 ms, default BatchSize, from 32 and 256 goroutines
// (RunParallel with g/GOMAXPROCS per P); ns/op is per record, until every
// record is delivered (Close), and cpu-ns/op the process's CPU time per
// record. enqueue is the same records through Enqueue, for scale.
//
// The producers outrun this sink, and no Memory.Limit holds them back: the
// queue builds a backlog until Close, so ns/op and cpu-ns/op include the
// garbage collector's work on it, which grows as the producers' calls get
// cheaper (more records wait at once).
func BenchmarkEnqueueKeyRecord(b *testing.B) {
	keys := make([][]byte, 10000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "user-%05d", i)
	}
	value := make([]byte, 200)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	for _, call := range []string{"key", "enqueue"} {
		for _, g := range []int{32, 256} {
			b.Run(fmt.Sprintf("%s/g=%d", call, g), func(b *testing.B) {
				q, err := New(Config[benchRecord]{
					Send: benchRecordSend, SizeOf: benchRecordSize,
					Workers: 8, FlushInterval: 10 * time.Millisecond,
				})
				if err != nil {
					b.Fatal(err)
				}
				b.SetParallelism(max(g/runtime.GOMAXPROCS(0), 1))
				var next atomic.Uint64
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := processCPU(b)
				b.RunParallel(func(pb *testing.PB) {
					i := next.Add(3137) // producers walk the keys from spread-out points
					for pb.Next() {
						k := keys[i%uint64(len(keys))]
						i++
						r := benchRecord{Key: k, Value: value}
						var err error
						if call == "key" {
							err = q.EnqueueKey(KeyOf(unsafe.String(unsafe.SliceData(k), len(k))), r)
						} else {
							err = q.Enqueue(r)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
				if err := q.Close(); err != nil { // delivers everything: part of the work
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
				if st := q.Stats(); st.Delivered != st.Enqueued {
					b.Fatalf("delivered %d of %d", st.Delivered, st.Enqueued)
				}
			})
		}
	}
}

// processCPU is the CPU time the process has used, in nanoseconds (every
// thread: the producers, the collector, the senders, the garbage
// collector). On a shared machine it is steadier than ns/op, which counts
// the time other processes held the CPUs too.
func processCPU(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Skip("no process rusage:", err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
