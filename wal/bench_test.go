package wal

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// jsonEvent returns a realistic ~100-byte (n=0) JSON event; events differ
// in ids, times and values the way a click stream's do.
func jsonEvent(r *rand.Rand, seq int) []byte {
	pages := []string{"/", "/cart", "/checkout", "/products/shoes", "/products/hats", "/search", "/account"}
	events := []string{"view", "click", "add_to_cart", "purchase"}
	return fmt.Appendf(nil, `{"ts":%d,"ev":"%s","uid":%d,"sid":"%08x","page":"%s","ms":%d}`,
		1764100000000+int64(seq)*3, events[r.IntN(len(events))], r.IntN(50000), r.Uint32(), pages[r.IntN(len(pages))], r.IntN(900))
}

// BenchmarkAppendSync measures the durable group commit: many goroutines
// (64 per P) each append 100-byte items with AppendItem, which returns once
// the item is on disk. Reported: items/s and the p50/p99 latency of one
// AppendItem. Target: >= 2M items/s with p99 <= 2 ms.
//
// Little's law sets the concurrency this needs: with one fdatasync round
// taking ~1 ms here, 2M items/s means ~2000 items in flight, i.e. ~2000
// goroutines each waiting for its item (the Queue's Sync-mode Enqueue).
func BenchmarkAppendSync(b *testing.B) {
	for _, g := range []int{128, 2048} {
		for _, c := range []Compression{Snappy, LZ4, NoCompression} {
			if g == 128 && c != Snappy {
				continue
			}
			b.Run(fmt.Sprintf("%s/goroutines=%d", c, g), func(b *testing.B) { benchmarkAppendSync(b, Options{Compression: c}, g) })
		}
	}
}

// BenchmarkAppendSyncEncryption is BenchmarkAppendSync (snappy, 64
// goroutines) without and with Options.EncryptionKey: what sealing every
// record costs the durable group commit. Compare with
//
//	go test -run '^$' -bench 'Encryption' -count 5 ./wal/ > enc.txt
//	benchstat -col /enc enc.txt
func BenchmarkAppendSyncEncryption(b *testing.B) {
	for _, on := range []bool{false, true} {
		opts := Options{}
		if on {
			opts.EncryptionKey = testKey(1)
		}
		b.Run("enc="+onOff(on), func(b *testing.B) { benchmarkAppendSync(b, opts, 64) })
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// BenchmarkAppendItemsSync is BenchmarkAppendSync with 16 items per call
// (AppendItems, the path for a batch enqueue): per-item figures.
func BenchmarkAppendItemsSync(b *testing.B) {
	for _, g := range []int{16, 128} {
		b.Run(fmt.Sprintf("snappy/goroutines=%d", g), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			const per = 16
			var seed atomic.Uint64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetBytes(100)
			b.SetParallelism(max(1, g/runtime.GOMAXPROCS(0)))
			if _, err := l.AppendItem([]byte("warm-up")); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			var items atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 1))
				batch := make([][]byte, per)
				for i := range batch {
					batch[i] = make([]byte, 100)
					copy(batch[i], jsonEvent(r, i))
				}
				var mine []time.Duration
				n := 0
				for pb.Next() {
					n++
					if n%per != 0 {
						continue // b.N counts items: one call per 16
					}
					t0 := time.Now()
					if _, err := l.AppendItems(batch); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
					items.Add(per)
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(items.Load())/elapsed.Seconds(), "items/s")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

func benchmarkAppendSync(b *testing.B, opts Options, goroutines int) {
	dir := b.TempDir()
	l, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var lat []time.Duration
	var seed atomic.Uint64
	var items atomic.Int64
	b.SetBytes(100)
	b.ReportAllocs()
	b.SetParallelism(max(1, goroutines/runtime.GOMAXPROCS(0)))
	if _, err := l.AppendItem([]byte("warm-up")); err != nil { // creates the segment
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 1))
		item := make([]byte, 100)
		copy(item, jsonEvent(r, 0))
		mine := make([]time.Duration, 0, 1024)
		var n int64
		for pb.Next() {
			n++
			if n%8 != 0 { // latency of one call in 8: time.Now is not free
				if _, err := l.AppendItem(item); err != nil {
					b.Error(err)
					return
				}
				continue
			}
			t0 := time.Now()
			_, err := l.AppendItem(item)
			mine = append(mine, time.Since(t0))
			if err != nil {
				b.Error(err)
				return
			}
		}
		items.Add(n)
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	st := l.Stats()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(items.Load())/elapsed.Seconds(), "items/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(st.Items)/float64(max(st.Appended, 1)), "items/record")
		b.ReportMetric(float64(st.Appended)/float64(max(st.Syncs, 1)), "records/sync")
	}
}

// BenchmarkAppendRecord measures Append of 64 KiB record payloads (a batch
// of JSON events) from several goroutines, durable on return.
func BenchmarkAppendRecord(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	var payload []byte
	for i := 0; len(payload) < 64<<10; i++ {
		payload = AppendFrame(payload, jsonEvent(r, i))
	}
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetBytes(int64(len(payload)))
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRecovery measures Open + Replay of a 128 MiB WAL directory of
// 256 KiB records of JSON events; SetBytes is the segment bytes holding
// records, so MB/s is the recovery rate (target >= 1 GB/s). Open verifies
// every checksum; Replay decompresses on GOMAXPROCS workers.
func BenchmarkRecovery(b *testing.B) {
	for _, c := range []Compression{Snappy, LZ4, NoCompression} {
		b.Run(c.String(), func(b *testing.B) { benchmarkRecovery(b, Options{Compression: c}) })
	}
}

// BenchmarkRecoveryEncryption is BenchmarkRecovery (snappy) without and
// with Options.EncryptionKey: Open's checksums cover the ciphertext and
// need no key; Replay's workers open (AES-GCM) each record before they
// decompress it. MB/s is the rate over the bytes on disk.
func BenchmarkRecoveryEncryption(b *testing.B) {
	for _, on := range []bool{false, true} {
		opts := Options{}
		if on {
			opts.EncryptionKey = testKey(1)
		}
		b.Run("enc="+onOff(on), func(b *testing.B) { benchmarkRecovery(b, opts) })
	}
}

func benchmarkRecovery(b *testing.B, opts Options) {
	dir := b.TempDir()
	opts.NoSync, opts.SegmentSize = true, 32<<20
	l, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	const target = 128 << 20 // bytes of records on disk
	var payload []byte
	for seq := 0; ; {
		payload = payload[:0]
		for len(payload) < 256<<10 {
			payload = AppendFrame(payload, jsonEvent(r, seq))
			seq++
		}
		if _, err := l.Write(payload); err != nil {
			b.Fatal(err)
		}
		if s := l.Stats(); s.Bytes >= target+opts.SegmentSize {
			break
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	used := usedBytes(b, dir)
	b.SetBytes(used)
	b.ResetTimer()
	var raw int64
	for i := 0; i < b.N; i++ {
		l, err := Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		raw = 0
		// The callback only takes the payload: what it then costs to decode
		// items is the caller's, not the log's.
		err = l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
			raw += int64(len(p))
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
	}
	b.ReportMetric(float64(raw)/float64(used), "raw/disk")
}

// usedBytes sums the record bytes of the segments in dir.
func usedBytes(tb testing.TB, dir string) int64 {
	segs, err := listSegments(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, s := range segs {
		data, err := os.ReadFile(filepath.Join(dir, s.name))
		if err != nil {
			tb.Fatal(err)
		}
		sc, _ := scanSegment(data, s.firstID, 64<<20, nil)
		n += sc.end
	}
	return n
}

// BenchmarkCompression compares the codecs on a batch of realistic JSON
// events (one 256 KiB record payload): compress and decompress speed per
// raw byte, and the ratio raw/stored.
func BenchmarkCompression(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	var payload []byte
	for i := 0; len(payload) < 256<<10; i++ {
		payload = AppendFrame(payload, jsonEvent(r, i))
	}
	for _, c := range []Compression{Snappy, LZ4, NoCompression} {
		z := &compressor{c: c}
		stored, codec := z.compress(payload)
		ratio := float64(len(payload)) / float64(len(stored))
		stored = slices.Clone(stored)
		b.Run("compress/"+c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			for i := 0; i < b.N; i++ {
				z.compress(payload)
			}
			b.ReportMetric(ratio, "ratio")
		})
		b.Run("decompress/"+c.String(), func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			var buf []byte
			for i := 0; i < b.N; i++ {
				var err error
				if _, buf, err = decompress(buf, codec, stored, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(ratio, "ratio")
		})
	}
}

// BenchmarkAck measures what acknowledging a batch costs: the records (100
// framed items each) are written first, untimed; then each is acknowledged
// item by item in ranges of 10 (AckRange) or whole (Ack), and the ack log
// is written (Checkpoint) at the end, all timed. The ack log's fdatasync
// per AckInterval is amortized over the acks it covers. Write is timed in
// the same run, for a ratio.
func BenchmarkAck(b *testing.B) {
	var batch []byte
	for i := 0; i < 100; i++ {
		batch = AppendFrame(batch, payloadFor(i))
	}
	setup := func(b *testing.B) (*Log, []uint64) {
		l := openT(b, b.TempDir(), Options{NoSync: true})
		ids := make([]uint64, b.N)
		for i := range ids {
			id, err := l.Write(batch)
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = id
		}
		return l, ids
	}
	b.Run("Write", func(b *testing.B) {
		l := openT(b, b.TempDir(), Options{NoSync: true})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Write(batch); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		l.Close()
	})
	// ackAll times ack over every record, and the ack log write after.
	ackAll := func(b *testing.B, ack func(l *Log, id uint64) error) {
		l, ids := setup(b)
		b.ReportAllocs()
		b.ResetTimer()
		for _, id := range ids {
			if err := ack(l, id); err != nil {
				b.Fatal(err)
			}
		}
		if err := l.Checkpoint(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		l.Close()
	}
	b.Run("Ack", func(b *testing.B) {
		ackAll(b, func(l *Log, id uint64) error { return l.Ack(id) })
	})
	b.Run("AckRange10x10", func(b *testing.B) {
		ackAll(b, func(l *Log, id uint64) error {
			for i := range 10 {
				if err := l.AckRange(id, 10*i, 10); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// BenchmarkAppendOneKeyedSync: one 100-byte item per call from 64
// goroutines, durable on return, with a key (AppendKeyedItemsAt: a keyed
// record) and without (AppendItemsAt): what a key costs EnqueueKey's sync
// path in the log.
func BenchmarkAppendOneKeyedSync(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		b.Run("keyed="+onOff(keyed), func(b *testing.B) {
			l, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var seed atomic.Uint64
			b.SetBytes(100)
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 1))
				item := [][]byte{make([]byte, 100)}
				copy(item[0], jsonEvent(r, 0))
				key := []uint64{r.Uint64()}
				for pb.Next() {
					var err error
					if keyed {
						_, _, err = l.AppendKeyedItemsAt(item, key)
					} else {
						_, _, err = l.AppendItemsAt(item)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkResyncAfterDamage: the scan's look-ahead after a damaged record
// whose payload is user data. "random": random bytes (a sealed payload, or
// an item that does not compress), where an offset's id is checked before
// its checksum, so the look-ahead is linear. "claims": a payload that
// claims, at a third of its 8-byte offsets, a record of half its size with
// the next id. In a salted segment (the current format) a claimed id
// unmasks to an id the offset cannot hold, so each claim costs 8 bytes
// read and the look-ahead is linear; in an unsalted one ("v2/", the
// format before the salt, still read) each claim costs a checksum over
// half the record, so the time grows with the square of its size
// (seconds for 4 MiB).
func BenchmarkResyncAfterDamage(b *testing.B) {
	const salt = 0x5EED
	for _, c := range []struct {
		name   string
		mb     int
		claims bool
		salt   uint32
	}{
		{"random/16MiB", 16, false, salt}, {"claims/1MiB", 1, true, salt}, {"claims/2MiB", 2, true, salt}, {"claims/4MiB", 4, true, salt},
		{"v2/claims/1MiB", 1, true, 0}, {"v2/claims/2MiB", 2, true, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := c.mb << 20
			p := make([]byte, n)
			if c.claims {
				for i := 0; i+24 <= n; i += 24 {
					binary.LittleEndian.PutUint64(p[i:], 1)
					binary.LittleEndian.PutUint64(p[i+8:], math.MaxUint64)
					binary.LittleEndian.PutUint64(p[i+16:], uint64(n/2))
				}
			} else {
				r := rand.New(rand.NewPCG(1, 2))
				for i := 0; i+8 <= n; i += 8 {
					binary.LittleEndian.PutUint64(p[i:], r.Uint64())
				}
			}
			seg := make([]byte, segmentHeaderSize+recordSize(n)+64)
			hdr := segmentHeader{firstID: 1, size: uint64(len(seg)), salt: c.salt}
			putSegmentHeader(seg, hdr)
			encodeRecord(seg[segmentHeaderSize:], recordHeader{id: 1, time: 5, codec: codecNone}, p, hdr.framing())
			seg[segmentHeaderSize+8] ^= 1 // the record's timestamp: its checksum fails
			b.SetBytes(int64(len(seg)))
			for b.Loop() {
				if s, _ := scanSegment(seg, 1, 64<<20, nil); s.damage == nil {
					b.Fatal("no damage found")
				}
			}
		})
	}
}

// processCPU is the CPU time the process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkKeyedSyncCPU: one 100-byte keyed item per call from 256
// goroutines, durable on return (EnqueueKey's path in Sync mode), with
// the process's CPU per item: what a round of the group commit costs the
// machine, the fdatasync's kernel work included.
func BenchmarkKeyedSyncCPU(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var seed atomic.Uint64
	b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
	if _, err := l.AppendItem([]byte("warm-up")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := processCPU()
	syncs0 := l.Stats().Syncs
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 1))
		item := [][]byte{make([]byte, 100)}
		copy(item[0], jsonEvent(r, 0))
		key := []uint64{r.Uint64()}
		for pb.Next() {
			if _, _, err := l.AppendKeyedItemsAt(item, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/item")
	b.ReportMetric(float64(b.N)/float64(max(l.Stats().Syncs-syncs0, 1)), "items/sync")
}
