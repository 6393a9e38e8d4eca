// tests/e2e/reflection_go: a server reflection client built on grpc-go's own generated
// v1alpha stubs (Debian's golang-google-grpc-dev, the library grpcurl is built on), so the
// server's answers are also read by a protobuf implementation other than python's.
//
//	reflection_go HOST:PORT
//
// On one ServerReflectionInfo stream: list_services; file_containing_symbol for every
// service (the first file must declare it, every file must parse as a FileDescriptorProto and
// come once per stream); an unknown symbol (error_response NOT_FOUND); list_services again
// (the stream goes on); then CloseSend and the stream must end OK. Prints one line per
// service, "ok" at the end; exits 1 with the reason on the first failure.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/golang/protobuf/proto"
	dpb "github.com/golang/protobuf/protoc-gen-go/descriptor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

func fail(format string, args ...interface{}) {
	fmt.Printf("FAIL "+format+"\n", args...)
	os.Exit(1)
}

func roundTrip(stream rpb.ServerReflection_ServerReflectionInfoClient,
	req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
	if err := stream.Send(req); err != nil {
		fail("send %v: %v", req, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		fail("recv for %v: %v", req, err)
	}
	if !proto.Equal(resp.GetOriginalRequest(), req) {
		fail("original_request %v, want %v", resp.GetOriginalRequest(), req)
	}
	return resp
}

func listServices(stream rpb.ServerReflection_ServerReflectionInfoClient) []string {
	resp := roundTrip(stream, &rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: ""}})
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	return names
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: reflection_go HOST:PORT")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		fail("ServerReflectionInfo: %v", err)
	}
	names := listServices(stream)
	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection", "grpc.testing.TestService",
		"ringstream.v1.Bulk"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		fail("services %v, want %v", names, want)
	}
	sent := map[string]bool{}
	for _, name := range names {
		resp := roundTrip(stream, &rpb.ServerReflectionRequest{
			MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{
				FileContainingSymbol: name}})
		files := resp.GetFileDescriptorResponse().GetFileDescriptorProto()
		if len(files) == 0 {
			fail("%s: no file (error %v)", name, resp.GetErrorResponse())
		}
		for i, raw := range files {
			var fd dpb.FileDescriptorProto
			if err := proto.Unmarshal(raw, &fd); err != nil {
				fail("%s: file %d does not parse: %v", name, i, err)
			}
			if i > 0 && sent[fd.GetName()] {
				fail("%s: import %s sent twice on one stream", name, fd.GetName())
			}
			sent[fd.GetName()] = true
			if i > 0 {
				continue
			}
			found := false
			for _, svc := range fd.GetService() {
				if fd.GetPackage()+"."+svc.GetName() == name && len(svc.GetMethod()) > 0 {
					found = true
				}
			}
			if !found {
				fail("%s: not declared (with methods) in %s", name, fd.GetName())
			}
			fmt.Printf("%s %s\n", name, fd.GetName())
		}
	}
	resp := roundTrip(stream, &rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{
			FileContainingSymbol: "no.such.Symbol"}})
	if e := resp.GetErrorResponse(); e == nil || codes.Code(e.GetErrorCode()) != codes.NotFound {
		fail("unknown symbol: %v, want error_response NOT_FOUND", resp)
	}
	if got := listServices(stream); len(got) != len(want) {
		fail("list_services after the error: %v", got)
	}
	if err := stream.CloseSend(); err != nil {
		fail("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		fail("after CloseSend: %v, want the stream to end OK", err)
	}
	fmt.Println("ok")
}
