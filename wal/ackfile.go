package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The acknowledged low-water mark lives in ackFileName as two slots, each in
// its own 512-byte sector. Writes alternate between them and are followed by
// fdatasync, so a write torn by a crash damages only the slot being written
// and the other one still holds the previous mark. The reader takes the
// valid slot with the higher sequence number. Losing a mark can only cause
// duplicates (records replayed again), never loss.
//
// Slot: [0:4] magic "VACK", [4:12] seq, [12:20] mark, [20:24] CRC32C of [0:20].
const (
	ackFileName = "ACK"
	ackMagic    = 0x5641434B
	ackSlotSize = 512
	ackSlotLen  = 24
)

type ackFile struct {
	f   *os.File
	seq uint64
}

func encodeAckSlot(b []byte, seq, mark uint64) {
	binary.BigEndian.PutUint32(b[0:4], ackMagic)
	binary.LittleEndian.PutUint64(b[4:12], seq)
	binary.LittleEndian.PutUint64(b[12:20], mark)
	binary.LittleEndian.PutUint32(b[20:24], crc32.Checksum(b[0:20], castagnoli))
}

func decodeAckSlot(b []byte) (seq, mark uint64, ok bool) {
	if len(b) < ackSlotLen || binary.BigEndian.Uint32(b[0:4]) != ackMagic ||
		binary.LittleEndian.Uint32(b[20:24]) != crc32.Checksum(b[0:20], castagnoli) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[4:12]), binary.LittleEndian.Uint64(b[12:20]), true
}

// parseAckFile returns the newest valid mark in the file's bytes. valid is
// false when neither slot verifies (or the file is empty).
func parseAckFile(b []byte) (seq, mark uint64, valid bool) {
	for i := 0; i < 2; i++ {
		off := i * ackSlotSize
		if off+ackSlotLen > len(b) {
			break
		}
		if s, m, ok := decodeAckSlot(b[off : off+ackSlotLen]); ok && (!valid || s > seq) {
			seq, mark, valid = s, m, true
		}
	}
	return seq, mark, valid
}

// readAckMark reads the mark of dir without opening it for writing.
func readAckMark(dir string) (mark uint64, valid bool, err error) {
	b, err := os.ReadFile(dir + "/" + ackFileName)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	_, mark, valid = parseAckFile(b)
	return mark, valid, nil
}

// openAckFile opens (creating if needed) the ack file of dir.
// created says whether the caller must fsync the directory.
func openAckFile(dir string) (a *ackFile, mark uint64, valid, created bool, err error) {
	path := dir + "/" + ackFileName
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = true
	}
	if err != nil {
		return nil, 0, false, false, err
	}
	b := make([]byte, 2*ackSlotSize)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		f.Close()
		return nil, 0, false, false, fmt.Errorf("read %s: %w", path, err)
	}
	seq, mark, valid := parseAckFile(b[:n])
	return &ackFile{f: f, seq: seq}, mark, valid, created, nil
}

// write persists mark durably in the slot not holding the newest one.
func (a *ackFile) write(mark uint64) error {
	a.seq++
	var b [ackSlotLen]byte
	encodeAckSlot(b[:], a.seq, mark)
	if _, err := a.f.WriteAt(b[:], int64(a.seq%2)*ackSlotSize); err != nil {
		return fmt.Errorf("write ack mark: %w", err)
	}
	if err := fdatasync(a.f); err != nil {
		return fmt.Errorf("fdatasync ack mark: %w", err)
	}
	return nil
}
