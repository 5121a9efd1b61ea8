package wal

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Read-only access for tools (cmd/vinewal): these functions take no lock
// and change nothing, so they can look at a directory a live Log is
// writing (its newest records may then be in flight).

// Report describes a WAL directory: what Open would keep, replay and count
// as lost, computed by the same plan Open follows.
type Report struct {
	Dir        string
	AckMark    uint64 // every id <= AckMark was acknowledged
	AckedIDs   uint64 // ids the ack log records as acknowledged
	Written    uint64 // the ack log's written mark: every id <= Written was durably written
	AckValid   bool   // the ack log is present, readable and undamaged
	AckProblem string // what is wrong with it, if anything
	AckTorn    bool   // its last write was cut short (a crash): harmless, the next Open rewrites it
	LastID     uint64 // highest id known to have been issued
	Pending    uint64 // records on disk not acknowledged: what Open would replay
	Segments   []SegmentReport
	// Losses are the unacknowledged records that are gone (what Open
	// would count in Stats.Corrupt), LostRecords their total.
	Losses      []Loss
	LostRecords uint64
	// Unknown are ids missing from disk that a damaged ack log cannot
	// tell acknowledged from lost.
	Unknown     []Loss
	Quarantined []string // *.corrupt files moved aside by earlier recoveries
	// KeyIDs are the key ids the directory's encrypted segments and dead
	// letters are sealed under (sorted), MissingKeys those of them that
	// none of the keys given to Inspect has: Open with the same keys
	// would refuse the directory (ErrKey). Nothing here needs a key:
	// checksums cover the encrypted bytes.
	KeyIDs      []string
	MissingKeys []string
}

// Damaged reports whether anything is damaged or lost: a damaged segment,
// a lost record, an unusable ack log or ids whose fate is unknown.
func (r Report) Damaged() bool {
	for _, s := range r.Segments {
		if s.Damage != nil {
			return true
		}
	}
	return r.LostRecords > 0 || len(r.Unknown) > 0 || r.AckProblem != ""
}

// SegmentReport describes one segment file.
type SegmentReport struct {
	Name        string
	FirstID     uint64 // from the header (the file name's if the header is damaged)
	LastID      uint64 // last id of the intact records; FirstID-1 if none
	Records     int    // intact data records
	Keyed       int    // of those, keyed records: their items carry keys (EnqueueKey's)
	Pending     int    // of those, not acknowledged
	GapRecords  int    // records standing for ids lost in a repair by an earlier version
	FileSize    int64
	Used        int64  // bytes up to the end of the intact records
	Compression string // the codec the header names
	KeyID       string // the key id its records are sealed under; "" if in the clear
	Repaired    bool   // rewritten by a recovery
	// Unsalted: in the clear, in a format before salted framing (versions
	// 1 and 2, see format.go): after damage, a record forged inside an
	// item of this file could be taken for a real one. Such files stay
	// until their records are acknowledged (or a repair rewrites them).
	Unsalted bool
	Empty    bool // empty or all zeros
	Damage   *Damage
	// LostRecords counts the unacknowledged records lost from this file
	// (see Report.Losses).
	LostRecords uint64
}

// Inspect scans every segment of dir, verifying every checksum, reads the
// ack log and works out what Open would keep and count as lost. It takes no
// lock and changes nothing. keys (KeySize bytes each, any order) only
// serve to tell which key ids are missing (Report.MissingKeys); the scan
// itself needs none.
func Inspect(dir string, keys ...[]byte) (Report, error) {
	r := Report{Dir: dir}
	ring, err := newKeyring(nil, keys)
	if err != nil {
		return r, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return r, err
	}
	if !st.IsDir() {
		return r, fmt.Errorf("%s is not a directory", dir)
	}
	files, err := listSegments(dir)
	if err != nil {
		return r, err
	}
	av, err := readAckView(dir, len(files) > 0, false, nil)
	if err != nil {
		return r, err
	}
	r.AckValid, r.AckProblem, r.AckTorn = av.exact && !av.absent, av.problem, av.state.badTail > 0 || av.state.tornBytes > 0
	r.AckMark, r.Written = av.state.acked.mark(), av.state.written
	for _, sp := range av.state.acked.spans {
		r.AckedIDs += sp.hi - sp.lo + 1
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return r, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), corruptSuffix) {
			r.Quarantined = append(r.Quarantined, e.Name())
		}
	}
	psegs := make([]planSegment, len(files))
	for i, sf := range files {
		ss := scanFile(dir, sf, 64<<20)
		if ss.unmap != nil {
			ss.unmap()
		}
		if ss.err != nil {
			return r, ss.err
		}
		psegs[i] = planSegment{name: sf.name, nameID: sf.firstID, zero: ss.zero, scan: ss.scan, gaps: ss.gaps}
		sr := SegmentReport{Name: sf.name, FileSize: int64(len(ss.data)), Empty: ss.zero, FirstID: sf.firstID, LastID: sf.firstID - 1}
		if !ss.zero {
			scan := ss.scan
			sr.FirstID, sr.LastID, sr.Records, sr.Used, sr.Damage = scan.firstID, scan.lastID, scan.dataRecs, scan.end, scan.damage
			sr.GapRecords = scan.records - scan.dataRecs
			sr.Keyed = scan.keyed
			if scan.headerOK {
				sr.Compression = codecName(scan.header.codec)
				sr.Repaired = scan.header.flags&segmentRepaired != 0
				if scan.header.sealed {
					sr.KeyID = keyIDString(scan.header.keyID)
				}
				sr.Unsalted = !scan.header.sealed && scan.header.salt == 0
			}
		}
		r.Segments = append(r.Segments, sr)
	}
	all, missing := map[string]bool{}, map[string]bool{}
	if err := checkKeys(dir, &keyring{}, func(id string) { all[id] = true }); err != nil {
		return r, err
	}
	if err := checkKeys(dir, ring, func(id string) { missing[id] = true }); err != nil {
		return r, err
	}
	r.KeyIDs, r.MissingKeys = slices.Sorted(maps.Keys(all)), slices.Sorted(maps.Keys(missing))
	p := planRecovery(av, psegs)
	r.LastID, r.Losses, r.LostRecords = p.hi, p.losses, p.lost
	for _, u := range p.unknown {
		r.Unknown = append(r.Unknown, Loss{From: u.lo, To: u.hi, Reason: "missing from disk; the damaged ack log cannot tell whether they were acknowledged"})
	}
	for i := range r.Segments {
		sr, v := &r.Segments[i], p.verdicts[i]
		if sr.Damage == nil && v.damage != nil {
			sr.Damage = v.damage // overlap with the previous segment
		}
		if v.keep {
			for id := sr.FirstID; id <= v.keepLast; id++ {
				if !av.state.acked.contains(id) && !containsSpan(psegs[i].gaps, id) && psegs[i].scan.holeOf(id) == nil {
					sr.Pending++
				}
			}
			r.Pending += uint64(sr.Pending)
		}
		for _, loss := range p.losses {
			if loss.Segment == sr.Name {
				sr.LostRecords += loss.Records()
			}
		}
	}
	return r, nil
}

func containsSpan(spans []span, id uint64) bool {
	for _, sp := range spans {
		if sp.lo <= id && id <= sp.hi {
			return true
		}
	}
	return false
}

// Record is one record as ReadSegment returns it.
type Record struct {
	ID          uint64
	Time        time.Time
	Offset      int64  // in the segment file
	Compression string // codec of the stored payload
	StoredLen   int    // bytes on disk
	Gap         bool   // a gap record: ids up to ID were lost and counted
	Payload     []byte // decompressed items, framed; valid only during the callback
	// Keys are a keyed record's keys, Keys[i] the key of item i (nil: a
	// record without keys); valid only during the callback.
	Keys []uint64
}

// ReadSegment calls fn for each intact record of the segment file at path,
// in order, and returns the scan's damage (nil if none) once done. A record
// that verifies but does not decompress (or authenticate) stops it with
// ErrCorrupt. An encrypted segment needs its key among keys (KeySize
// bytes each, any order), or ReadSegment returns ErrKey before calling fn.
func ReadSegment(path string, fn func(Record) error, keys ...[]byte) (*Damage, error) {
	ring, err := newKeyring(nil, keys)
	if err != nil {
		return nil, err
	}
	id, ok := parseSegmentName(filepath.Base(path))
	if !ok {
		id = 0
	}
	data, unmap, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	rr := recordReader{limit: offlineReadLimit}
	var scan segmentScan
	err = withFaultsAsErrors(func() error {
		var aead cipher.AEAD
		if h, err := parseSegmentHeader(data); err == nil {
			if aead, err = ring.forHeader(h); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(path), err)
			}
		}
		var err error
		scan, err = scanSegment(data, id, offlineReadLimit, func(off int64, h recordHeader, stored []byte) error {
			rec := Record{ID: h.id, Time: time.Unix(0, h.time), Offset: off, Compression: codecName(h.codec), StoredLen: len(stored), Gap: h.kind == kindGap}
			if !rec.Gap {
				var err error
				rec.Payload, err = rr.payload(aead, &h, stored)
				if err == nil && h.keyed {
					var keys []byte
					rec.Payload, keys, _, err = splitKeyed(rec.Payload)
					rec.Keys = appendKeysOf(make([]uint64, 0, len(keys)/8), keys)
				}
				if err != nil {
					return fmt.Errorf("record %d at offset %d: %w", h.id, off, err)
				}
			}
			return fn(rec)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return scan.damage, nil
}

// Repair runs Open's recovery on dir (which must not be in use) and closes
// it again: damaged segments are moved aside as *.corrupt and replaced by
// their intact prefix. It returns the recovery's counters.
func Repair(dir string, opts Options) (Stats, error) {
	if _, err := os.Stat(dir); err != nil {
		return Stats{}, err
	}
	opts.noSpare = true
	l, err := Open(dir, opts)
	if err != nil {
		return Stats{}, err
	}
	st := l.Stats()
	if err := l.Close(); err != nil && !errors.Is(err, ErrClosed) {
		return st, err
	}
	return st, nil
}
