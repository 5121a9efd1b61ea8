package wal

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pageExtents is a nextData for data in memory that reports as holes the
// 4 KiB pages that hold only zeros, as a file system may (truthfully: a
// hole reads as zeros). calls counts the probes.
func pageExtents(data []byte, calls *int) func(int64) (int64, int64) {
	const page = 4096
	n := int64(len(data))
	zeroPage := func(p int64) bool { return allZero(data[p:min(p+page, n)]) }
	return func(off int64) (int64, int64) {
		*calls++
		start := off
		if p := off &^ (page - 1); zeroPage(p) {
			start = n
			for q := p + page; q < n; q += page {
				if !zeroPage(q) {
					start = q
					break
				}
			}
		}
		end := n
		for q := start&^(page-1) + page; q < n; q += page {
			if zeroPage(q) {
				end = q
				break
			}
		}
		return start, end
	}
}

// comparableScan drops what differs between a scan with a probe and one
// without: the probe itself.
func comparableScan(s segmentScan) segmentScan {
	s.nextData, s.dataEnd = nil, 0
	return s
}

// TestSkipZerosProbesFromAnyPhase: a zero run that starts at any 8-byte
// phase asks the probe where the data is once it reaches a page boundary,
// and jumps the hole. (A walk in 64-byte steps that probed only when it
// landed on a page boundary never probed for seven phases in eight, and
// read the whole tail.)
func TestSkipZerosProbesFromAnyPhase(t *testing.T) {
	const size = 1 << 20
	data := make([]byte, size)
	const next = size - 4096 + 24 // the next non-zero word, in the last page
	binary.LittleEndian.PutUint64(data[next:], 1)
	for from := int64(8192); from < 8192+128; from += 8 {
		calls := 0
		s := segmentScan{nextData: pageExtents(data, &calls)}
		if got := s.skipZeros(data, from); got != next {
			t.Fatalf("from %d: skipZeros = %d, want %d", from, got, next)
		}
		if calls != 1 {
			t.Fatalf("from %d: %d probes, want 1 (at the first page boundary)", from, calls)
		}
	}
	// Without a probe, and with a probe that knows nothing (all data), the
	// walk finds the same word.
	for from := int64(8192); from < 8192+64; from += 8 {
		s := segmentScan{}
		if got := s.skipZeros(data, from); got != next {
			t.Fatalf("from %d, no probe: skipZeros = %d, want %d", from, got, next)
		}
		calls := 0
		s = segmentScan{nextData: func(off int64) (int64, int64) { calls++; return off, size }}
		if got := s.skipZeros(data, from); got != next || calls != 1 {
			t.Fatalf("from %d, all data: skipZeros = %d after %d probes, want %d after 1", from, got, calls, next)
		}
	}
}

// TestSkipZerosEnds: runs that end in the file's last bytes, or in fewer
// than 8 of them, stop where the walk without a probe stops.
func TestSkipZerosEnds(t *testing.T) {
	for _, n := range []int{0, 7, 8, 63, 64, 4095, 4096, 4100, 8192 + 5} {
		data := make([]byte, n)
		for from := int64(0); from < min(int64(n)+8, 200); from += 8 {
			calls := 0
			a := segmentScan{}
			b := segmentScan{nextData: pageExtents(data, &calls)}
			if from > int64(n) {
				continue
			}
			if x, y := a.skipZeros(data, from), b.skipZeros(data, from); x != y {
				t.Fatalf("%d bytes from %d: %d without a probe, %d with", n, from, x, y)
			}
		}
	}
}

// TestScanLeavesUnwrittenTailUnread: recovery's scan of a segment the Log
// wrote with pwrite jumps the preallocated tail it never wrote instead of
// reading it through the mapping (which faults in a zero page for each of
// its pages): after the scan, no page past the records' last is resident.
// Skipped where the file system does not report that tail as a hole.
func TestScanLeavesUnwrittenTailUnread(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{NoSync: true, SegmentSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 10_000)
	for i := 0; i < 60; i++ { // ends at no particular phase of 64 bytes
		rec[i] = byte(i + 1)
		if _, err := l.Write(rec[:len(rec)-i*8-i%8]); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := listSegments(dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("segments %v, %v", files, err)
	}
	path := filepath.Join(dir, files[0].name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if hole >= st.Size() {
		t.Skip("the file system reports no hole in the unwritten tail")
	}
	ss := scanFile(dir, files[0], Options{}.readLimit())
	defer ss.unmap()
	if ss.err != nil || ss.scan.damage != nil || ss.scan.records != 60 {
		t.Fatalf("scan: %v, damage %v, %d records", ss.err, ss.scan.damage, ss.scan.records)
	}
	page := int64(os.Getpagesize())
	from := (ss.scan.end + page - 1) / page * page
	if from < hole {
		from = (hole + page - 1) / page * page
	}
	vec := make([]byte, (int64(len(ss.data))-from+page-1)/page)
	tail := ss.data[from:]
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&tail[0])), uintptr(len(tail)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Skipf("mincore: %v", errno)
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	if resident > 0 {
		t.Fatalf("%d of the %d pages of the unwritten tail (from %d) are resident after the scan", resident, len(vec), from)
	}
}

// FuzzScanSkipping scans arbitrary bytes, with a run of zeros inserted, as
// a segment with and without a probe that reports the all-zero pages as
// holes: the two scans must agree in everything they report.
func FuzzScanSkipping(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint16(0))
	seg := sealedSegment(f)
	f.Add(seg, uint16(0), uint16(0))
	f.Add(seg, uint16(len(seg)), uint16(2000))
	f.Add(seg, uint16(len(seg)/2), uint16(700))
	f.Add(keyedSegment(f, false), uint16(100), uint16(5000))
	f.Fuzz(func(t *testing.T, data []byte, at, zeros uint16) {
		if len(data) > 0 {
			cut := int(at) % (len(data) + 1)
			grown := make([]byte, 0, len(data)+8*int(zeros))
			grown = append(grown, data[:cut]...)
			grown = append(grown, make([]byte, 8*int(zeros))...)
			data = append(grown, data[cut:]...)
		}
		plain, err := scanSegment(data, 1, fuzzLimit, nil)
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		probed, err := scanSegmentSkipping(data, 1, fuzzLimit, nil, pageExtents(data, &calls))
		if err != nil {
			t.Fatal(err)
		}
		if a, b := comparableScan(plain), comparableScan(probed); !reflect.DeepEqual(a, b) {
			t.Fatalf("scans differ:\nwithout a probe %+v\nwith one        %+v", a, b)
		}
	})
}
