// perf/compare/go: the grpc-go peer of ringstreamd for perf/compare.
//
// Bulk Put, Get, Echo (and Delete, for the harness) and grpc.testing.TestService/UnaryCall
// over h2c, with the layout the gRPC C++ peer uses too: DATA_DIR/objects/<hex SHA-256 of
// the name>, one file per object; Put writes DATA_DIR/tmp/<random>, then renames it into
// place. The work per byte
// matches ringstreamd's: Put hashes the data (SHA-256), Get and Echo set Chunk.crc32c.
// Built by perf/compare/build.sh in GOPATH mode against Debian's golang-google-grpc-dev.
//
// Usage: compare-go PORT DATA_DIR
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "rsbulk"
	tpb "rstesting"
)

const (
	defaultChunk = 64 << 10
	maxChunk     = 1 << 20
	maxMsg       = 4 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type bulk struct {
	pb.UnimplementedBulkServer
	dir string
}

func (b *bulk) path(name string) string {
	h := sha256.Sum256([]byte(name))
	return filepath.Join(b.dir, "objects", hex.EncodeToString(h[:]))
}

func (b *bulk) Put(s pb.Bulk_PutServer) error {
	first, err := s.Recv()
	if err != nil {
		return status.Error(codes.InvalidArgument, "empty stream")
	}
	hdr := first.GetHeader()
	if hdr == nil || hdr.Name == "" {
		return status.Error(codes.InvalidArgument, "first message must be a header")
	}
	dst := b.path(hdr.Name)
	if !hdr.Overwrite {
		if _, err := os.Stat(dst); err == nil {
			return status.Error(codes.AlreadyExists, hdr.Name)
		}
	}
	f, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "put-")
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha256.New()
	var size uint64
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data := m.GetData()
		if data == nil {
			return status.Error(codes.InvalidArgument, "message without data")
		}
		sum.Write(data)
		if _, err := f.Write(data); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		size += uint64(len(data))
	}
	digest := sum.Sum(nil)
	if hdr.Size != 0 && hdr.Size != size {
		return status.Error(codes.DataLoss, "size mismatch")
	}
	if len(hdr.Sha256) != 0 && string(hdr.Sha256) != string(digest) {
		return status.Error(codes.DataLoss, "sha256 mismatch")
	}
	if err := f.Sync(); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return s.SendAndClose(&pb.ObjectInfo{Name: hdr.Name, Size: size, Sha256: digest,
		ModifiedUnixMs: time.Now().UnixMilli()})
}

func (b *bulk) Get(req *pb.GetRequest, s pb.Bulk_GetServer) error {
	f, err := os.Open(b.path(req.Name))
	if err != nil {
		return status.Error(codes.NotFound, req.Name)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	size := uint64(st.Size())
	if req.Offset > size {
		return status.Error(codes.OutOfRange, "offset past the end")
	}
	end := size
	if req.Length != 0 && req.Offset+req.Length < size {
		end = req.Offset + req.Length
	}
	chunk := uint64(req.ChunkSize)
	if chunk == 0 {
		chunk = defaultChunk
	} else if chunk > maxChunk {
		chunk = maxChunk
	}
	buf := make([]byte, chunk)
	for off := req.Offset; off < end; {
		n := chunk
		if end-off < n {
			n = end - off
		}
		if _, err := f.ReadAt(buf[:n], int64(off)); err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		c := &pb.Chunk{Data: buf[:n], Offset: off, Crc32C: crc32.Checksum(buf[:n], castagnoli)}
		if err := s.Send(c); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (b *bulk) Echo(s pb.Bulk_EchoServer) error {
	var off uint64
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		out := &pb.Chunk{Data: m.Data, Offset: off, Crc32C: crc32.Checksum(m.Data, castagnoli)}
		if err := s.Send(out); err != nil {
			return err
		}
		off += uint64(len(m.Data))
	}
}

// Delete lets perf/compare clear the Put scenario's object before a timed upload, so the
// check afterwards proves that this upload was published.
func (b *bulk) Delete(_ context.Context, req *pb.DeleteRequest) (*pb.ObjectInfo, error) {
	if err := os.Remove(b.path(req.Name)); err != nil {
		return nil, status.Error(codes.NotFound, req.Name)
	}
	return &pb.ObjectInfo{Name: req.Name}, nil
}

type testService struct {
	tpb.UnimplementedTestServiceServer
}

func (*testService) UnaryCall(_ context.Context, req *tpb.SimpleRequest) (*tpb.SimpleResponse, error) {
	if req.ResponseSize < 0 {
		return nil, status.Error(codes.InvalidArgument, "negative response_size")
	}
	return &tpb.SimpleResponse{Payload: &tpb.Payload{Body: make([]byte, req.ResponseSize)}}, nil
}

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: compare-go PORT DATA_DIR")
	}
	dir := os.Args[2]
	for _, d := range []string{"objects", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsg+1024), grpc.MaxSendMsgSize(maxMsg+1024))
	pb.RegisterBulkServer(s, &bulk{dir: dir})
	tpb.RegisterTestServiceServer(s, &testService{})
	log.Printf("listening on 127.0.0.1:%s", os.Args[1])
	log.Fatal(s.Serve(lis))
}
