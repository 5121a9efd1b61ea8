package benchmarks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The durable floor: the most events per second any call that returns
// only once its own record is durable can reach on this disk, with no
// Kafka and no queue. It is the yardstick for vq-sync-key, whose
// EnqueueKey returns only after its item's fdatasync: what separates
// vq-sync-key from the floor is VineQueue's own cost and the WAL's file
// preparation (durable-floor-falloc, below), and what separates the floor
// from franz-go is the disk's.
//
// Each producer hands its record (key and value, length-prefixed) to a
// minimal group committer and waits until a pwrite and an fdatasync
// (x/sys/unix.Fdatasync, as the WAL's) that started after the record was
// added have both returned. The committer takes whatever the callers added
// while it was busy as one group: one pwrite at the file's next offset,
// one fdatasync, then it wakes the group's callers. It runs in t.TempDir()
// like vq-sync-key, into one 64 MiB file (the WAL's segment size)
// preallocated and zero-filled before the run and written in a circle: on
// ext4 a write into a range already written needs no extent conversion in
// the fdatasync that covers it, the cheapest case this disk has (the WAL's
// fallocated segments are not zero-filled by default, so its first sync
// into each range also commits that conversion).
//
// durable-floor-falloc is durable-floor on a file that is only fallocated,
// as the WAL's segments are, and large enough that the run never writes a
// byte twice (up to floorFallocMax): each fdatasync then also commits the
// extents its write converted from unwritten to written. Between it and
// durable-floor is what the file's preparation costs; between it and
// vq-sync-key, the rest of the queue's own cost.
//
// inFlight is how many groups may be between their pwrite and the end of
// their fdatasync at once: 1 is the classic group commit (one fdatasync at
// a time; callers who arrive during it wait for it and then for the next);
// 2 lets the next group's write and fdatasync start while the previous
// fdatasync is still in flight (each group still waits for its own). After
// a round that woke several callers, the committer waits (yielding, up to
// the round's length, or a 20 µs lull) for them to add their next records,
// as the WAL's group commit does: otherwise a round cut at once holds the
// first caller back and the others wait through its fdatasync.
func durableFloor(name string, inFlight int, zeroFill bool) realJobContender {
	return realJobContender{name: name, start: func(t *testing.T, _ string, events int) (func([]byte, []byte) error, func() error) {
		size := int64(floorFileSize)
		if !zeroFill {
			// Every record written once: its key, its value and their
			// length prefixes, with a segment's worth to spare.
			size = min(int64(events)*int64(realJobValueSize+len("user-00000")+4)+floorFileSize, floorFallocMax)
		}
		path := filepath.Join(t.TempDir(), "floor")
		fl, err := openFloorLog(path, size, inFlight, zeroFill)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fl.close() })
		wait := func() error {
			// Removed now: t is the whole run's, and its TempDir would
			// keep each contender's file (up to floorFallocMax) until the
			// run ends.
			err := errors.Join(fl.close(), os.Remove(path))
			rounds, records := fl.rounds, fl.records
			t.Logf("%s: %d records in %d fdatasync rounds, mean %.0f per round", name, records, rounds, float64(records)/float64(max(rounds, 1)))
			return err
		}
		return fl.append, wait
	}}
}

// floorFileSize is the floor's zero-filled file: one WAL segment's size.
// floorFallocMax bounds the fallocated one (a run of more events than fit
// writes it in a circle too, and its later laps cost less).
const (
	floorFileSize  = 64 << 20
	floorFallocMax = 1 << 30
)

// floorLog is the durable floor's group commit.
type floorLog struct {
	f        *os.File
	size     int64
	inFlight int

	mu      sync.Mutex
	cur     *floorGroup // the open group: records added since the last take
	pos     int64       // where the next group is written
	closed  bool
	free    [][]byte
	rounds  int // groups written and synced (read after close)
	records int // records in them

	kick chan struct{} // a group became non-empty
	stop chan struct{} // closed by close
	wg   sync.WaitGroup
}

type floorGroup struct {
	buf  []byte
	n    int
	err  error
	done chan struct{}
}

func openFloorLog(path string, size int64, inFlight int, zeroFill bool) (*floorLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("fallocate: %w", err)
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); zeroFill && off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		f.Close()
		return nil, err
	}
	l := &floorLog{f: f, size: size, inFlight: inFlight, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	l.cur = l.newGroupLocked()
	for range inFlight {
		l.wg.Add(1)
		go l.commit()
	}
	return l, nil
}

func (l *floorLog) newGroupLocked() *floorGroup {
	g := &floorGroup{done: make(chan struct{})}
	if n := len(l.free); n > 0 {
		g.buf, l.free = l.free[n-1][:0], l.free[:n-1]
	}
	return g
}

var errFloorClosed = errors.New("floor log closed")

// append adds one record and returns once a group holding it is durable.
func (l *floorLog) append(key, value []byte) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errFloorClosed
	}
	g := l.cur
	g.buf = binary.AppendUvarint(g.buf, uint64(len(key)))
	g.buf = append(g.buf, key...)
	g.buf = binary.AppendUvarint(g.buf, uint64(len(value)))
	g.buf = append(g.buf, value...)
	g.n++
	first := g.n == 1
	l.mu.Unlock()
	if first {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	<-g.done
	return g.err
}

// commit is one committer goroutine: inFlight of them take groups in turn.
func (l *floorLog) commit() {
	defer l.wg.Done()
	var woke int
	var last time.Duration
	for {
		if woke > 1 {
			l.gather(woke, last)
		}
		l.mu.Lock()
		g := l.cur
		if g.n == 0 {
			closed := l.closed
			l.mu.Unlock()
			if closed {
				return
			}
			woke = 0
			select {
			case <-l.kick:
			case <-l.stop:
			}
			continue
		}
		l.cur = l.newGroupLocked()
		off := l.pos
		if off+int64(len(g.buf)) > l.size {
			off = 0 // around the circle
		}
		l.pos = off + int64(len(g.buf))
		l.rounds++
		l.records += g.n
		l.mu.Unlock()
		t0 := time.Now()
		if _, err := l.f.WriteAt(g.buf, off); err != nil {
			g.err = err
		} else if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
			g.err = err
		}
		last, woke = time.Since(t0), g.n
		close(g.done)
		l.mu.Lock()
		if len(l.free) < 4 {
			l.free = append(l.free, g.buf[:0])
		}
		l.mu.Unlock()
	}
}

// gather waits, yielding, until the open group holds as many records as
// the last round woke callers, none has come for 20 µs, or the last
// round's length has passed.
func (l *floorLog) gather(woke int, limit time.Duration) {
	const idle = 20 * time.Microsecond
	limit = max(limit, idle)
	start := time.Now()
	lastAt, seen := start, -1
	for {
		l.mu.Lock()
		n, closed := l.cur.n, l.closed
		l.mu.Unlock()
		if n >= woke || closed {
			return
		}
		now := time.Now()
		if n != seen {
			lastAt, seen = now, n
		} else if now.Sub(lastAt) > idle {
			return
		}
		if now.Sub(start) > limit {
			return
		}
		runtime.Gosched()
	}
}

// close lets the committers write what was added, waits for them and
// closes the file.
func (l *floorLog) close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	l.wg.Wait()
	return l.f.Close()
}

// TestDurableFloorWritesEveryRecord: the floor's committer writes every
// record a caller handed it before the caller returns, in whole groups one
// after another from the file's start (no wrap at this size), whatever the
// number of fdatasyncs in flight; an append after close is refused.
func TestDurableFloorWritesEveryRecord(t *testing.T) {
	for _, inFlight := range []int{1, 2} {
		t.Run(fmt.Sprintf("inFlight=%d", inFlight), func(t *testing.T) {
			const producers, per = 16, 200
			path := filepath.Join(t.TempDir(), "floor")
			fl, err := openFloorLog(path, 1<<20, inFlight, inFlight == 1)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for g := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						if err := fl.append(fmt.Appendf(nil, "k%02d", g), fmt.Appendf(nil, "v%04d", i)); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := fl.close(); err != nil {
				t.Fatal(err)
			}
			if err := fl.append([]byte("k"), []byte("v")); !errors.Is(err, errFloorClosed) {
				t.Fatalf("append after close: %v, want errFloorClosed", err)
			}
			if fl.records != producers*per || fl.rounds < 1 || fl.rounds > fl.records {
				t.Fatalf("%d records in %d rounds, want %d records", fl.records, fl.rounds, producers*per)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			next := make(map[string]int) // per producer, the next value it wrote
			for n := 0; n < producers*per; n++ {
				var kv [2][]byte
				for j := range kv {
					size, k := binary.Uvarint(b)
					if k <= 0 || int(size) > len(b)-k {
						t.Fatalf("record %d: bad length at its field %d", n, j)
					}
					kv[j], b = b[k:k+int(size)], b[k+int(size):]
				}
				key, want := string(kv[0]), fmt.Sprintf("v%04d", next[string(kv[0])])
				if string(kv[1]) != want {
					t.Fatalf("record %d of %s: %q, want %q (each caller's records in its order)", n, key, kv[1], want)
				}
				next[key]++
			}
			if len(next) != producers {
				t.Fatalf("records from %d producers, want %d", len(next), producers)
			}
		})
	}
}
