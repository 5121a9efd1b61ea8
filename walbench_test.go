package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/wal"
)

// syncLoad runs calls Sync-mode calls of per 100-byte items from G
// goroutines and returns the per-call latencies.
func syncLoad(tb testing.TB, q *Queue[[]byte], G, calls, per int) []time.Duration {
	item := make([]byte, 100)
	lat := make([][]time.Duration, G)
	var wg sync.WaitGroup
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := make([][]byte, per)
			for i := range batch {
				batch[i] = item
			}
			for i := g; i < calls; i += G {
				t0 := time.Now()
				var err error
				if per == 1 {
					err = q.Enqueue(item)
				} else {
					_, err = q.EnqueueBatch(batch)
				}
				if err != nil {
					tb.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	return all
}

// BenchmarkSyncMode: WAL Sync mode, 100-byte items, G goroutines, each call
// durable on return. per=1 is Enqueue; per>1 is EnqueueBatch of that many
// items. ns/item and items/s over all items; p99-µs per call; batch-items
// is the mean batch Send received (BatchSize 1000).
func BenchmarkSyncMode(b *testing.B) {
	for _, G := range []int{64, 1024} {
		for _, per := range []int{1, 16} {
			b.Run(fmt.Sprintf("goroutines=%d/items-per-call=%d", G, per), func(b *testing.B) {
				var batches, items atomic.Int64
				q, err := New(Config[[]byte]{
					Send: func(_ context.Context, batch [][]byte) error {
						batches.Add(1)
						items.Add(int64(len(batch)))
						return nil
					},
					Workers: 4,
					WAL:     WALConfig{Dir: b.TempDir(), Mode: Sync},
				})
				if err != nil {
					b.Fatal(err)
				}
				calls := max(b.N/per, G)
				b.ResetTimer()
				lat := syncLoad(b, q, G, calls, per)
				b.StopTimer()
				n := calls * per
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/item")
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "items/s")
				if len(lat) > 0 {
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				}
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
				if batches.Load() > 0 {
					b.ReportMetric(float64(items.Load())/float64(batches.Load()), "batch-items")
				}
			})
		}
	}
}

// writeBacklog fills dir with a WAL of about size bytes of unacknowledged
// 100-byte items, as a crash leaves it, and returns how many items it holds.
func writeBacklog(tb testing.TB, dir string, size int64, compression wal.Compression) int {
	log, err := wal.Open(dir, wal.Options{Compression: compression, NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	item := make([]byte, 100)
	var payload []byte
	n := 0
	for written := int64(0); written < size; {
		payload = payload[:0]
		for range 1000 {
			copy(item, strconv.Itoa(n))
			payload = wal.AppendFrame(payload, item)
			n++
		}
		if _, err := log.Write(payload); err != nil {
			tb.Fatal(err)
		}
		written += int64(len(payload))
	}
	if err := log.Close(); err != nil {
		tb.Fatal(err)
	}
	return n
}

// backlogBytes is the size of the backlog of BenchmarkRecovery and
// BenchmarkIntakeBesideReplay: VINEQUEUE_BACKLOG_MB (default 256 MiB; the
// figures in the README use 1024).
func backlogBytes() int64 {
	if mb, err := strconv.Atoi(os.Getenv("VINEQUEUE_BACKLOG_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 256 << 20
}

// BenchmarkRecovery: a backlog of 100-byte items replayed through the
// Queue to a Send that returns nil; GB/s of item bytes, from New until the
// last replayed item is delivered.
func BenchmarkRecovery(b *testing.B) {
	for _, c := range []struct {
		name string
		wal  wal.Compression
		q    Compression
	}{{"snappy", wal.Snappy, Snappy}, {"lz4", wal.LZ4, LZ4}, {"none", wal.NoCompression, NoCompression}} {
		b.Run(c.name, func(b *testing.B) {
			size := backlogBytes()
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				dir := b.TempDir()
				n := writeBacklog(b, dir, size, c.wal)
				var delivered atomic.Int64
				done := make(chan struct{})
				b.StartTimer()
				t0 := time.Now()
				q, err := New(Config[[]byte]{
					Send: func(_ context.Context, batch [][]byte) error {
						if delivered.Add(int64(len(batch))) == int64(n) {
							close(done)
						}
						return nil
					},
					Workers: 4,
					WAL:     WALConfig{Dir: dir, Mode: Periodic, Compression: c.q},
				})
				if err != nil {
					b.Fatal(err)
				}
				<-done
				elapsed += time.Since(t0)
				b.StopTimer()
				if err := q.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)*float64(b.N)/elapsed.Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkIntakeBesideReplay: Sync-mode intake (64 goroutines, Enqueue of
// 100-byte items) while a backlog (VINEQUEUE_BACKLOG_MB) waits to replay
// into a sink that is down, against the same intake with no backlog in the
// same run (ratio-vs-normal); then the sink comes up and drain-s is how
// long the backlog and the new items take to be delivered.
func BenchmarkIntakeBesideReplay(b *testing.B) {
	const G, calls = 64, 20000
	normal := func() float64 {
		q, err := New(Config[[]byte]{Send: func(context.Context, [][]byte) error { return nil },
			WAL: WALConfig{Dir: b.TempDir(), Mode: Sync}})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		syncLoad(b, q, G, calls, 1)
		rate := calls / time.Since(t0).Seconds()
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
		return rate
	}
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		n := writeBacklog(b, dir, backlogBytes(), wal.Snappy)
		base := normal()
		up := make(chan struct{})
		var delivered atomic.Int64
		all := make(chan struct{})
		q, err := New(Config[[]byte]{
			Send: func(ctx context.Context, batch [][]byte) error {
				select {
				case <-up:
				case <-ctx.Done():
					return ctx.Err()
				}
				if delivered.Add(int64(len(batch))) == int64(n+calls) {
					close(all)
				}
				return nil
			},
			Workers: 4,
			Retry:   RetryPolicy{MaxAttempts: RetryForever},
			WAL:     WALConfig{Dir: dir, Mode: Sync},
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		syncLoad(b, q, G, calls, 1)
		rate := calls / time.Since(t0).Seconds()
		t1 := time.Now()
		close(up)
		<-all
		drain := time.Since(t1)
		b.StopTimer()
		if !q.Stats().Backlog.Replaying && delivered.Load() != int64(n+calls) {
			b.Fatal(errors.New("replay ended early"))
		}
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rate, "items/s-during-replay")
		b.ReportMetric(base, "items/s-normal")
		b.ReportMetric(rate/base, "ratio-vs-normal")
		b.ReportMetric(drain.Seconds(), "drain-s")
		b.ReportMetric(float64(backlogBytes())/drain.Seconds()/1e9, "drain-GB/s")
	}
}
