// perf/compare/cpp: the gRPC C++ peer of ringstreamd for perf/compare.
//
// Bulk Put, Get, Echo (and Delete, for the harness) and grpc.testing.TestService/UnaryCall
// over h2c (insecure credentials), with the layout the grpc-go peer uses too:
// DATA_DIR/objects/<hex SHA-256 of the name>, one file per object; Put writes DATA_DIR/tmp/put-XXXXXX, then renames it into
// place. Put hashes the data (SHA-256, libcrypto), Get and Echo set Chunk.crc32c (SSE4.2),
// the same work per byte as ringstreamd. The synchronous API (gRPC's thread pool), as most
// gRPC C++ services are written. Built by perf/compare/build.sh against Debian's
// libgrpc++-dev.
//
// Usage: compare-cpp PORT DATA_DIR
#include <fcntl.h>
#include <nmmintrin.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "bulk.grpc.pb.h"
#include "grpc_testing.grpc.pb.h"

namespace {

constexpr uint32_t kDefaultChunk = 64 << 10;
constexpr uint32_t kMaxChunk = 1 << 20;
constexpr int kMaxMsg = (4 << 20) + 1024;

uint32_t Crc32c(const std::string &s) {
    uint64_t crc = 0xffffffffu;
    const char *p = s.data();
    size_t n = s.size();
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        crc = _mm_crc32_u64(crc, w);
    }
    uint32_t c = static_cast<uint32_t>(crc);
    for (; n > 0; p++, n--)
        c = _mm_crc32_u8(c, static_cast<unsigned char>(*p));
    return ~c;
}

std::string Hex(const unsigned char *d, size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n; i++) {
        out += digits[d[i] >> 4];
        out += digits[d[i] & 15];
    }
    return out;
}

class BulkImpl final : public ringstream::v1::Bulk::Service {
  public:
    explicit BulkImpl(std::string dir) : dir_(std::move(dir)) {}

    grpc::Status Put(grpc::ServerContext *, grpc::ServerReader<ringstream::v1::PutRequest> *reader,
                     ringstream::v1::ObjectInfo *info) override {
        ringstream::v1::PutRequest msg;
        if (!reader->Read(&msg) || !msg.has_header() || msg.header().name().empty())
            return {grpc::StatusCode::INVALID_ARGUMENT, "first message must be a header"};
        const ringstream::v1::PutHeader hdr = msg.header();
        std::string dst = Path(hdr.name());
        struct stat st;
        if (!hdr.overwrite() && stat(dst.c_str(), &st) == 0)
            return {grpc::StatusCode::ALREADY_EXISTS, hdr.name()};
        std::string tmp = dir_ + "/tmp/put-XXXXXX";
        int fd = mkstemp(tmp.data());
        if (fd < 0)
            return {grpc::StatusCode::INTERNAL, "mkstemp failed"};
        EVP_MD_CTX *sha = EVP_MD_CTX_new();
        EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);
        uint64_t size = 0;
        grpc::Status result = grpc::Status::OK;
        while (reader->Read(&msg)) {
            if (msg.part_case() != ringstream::v1::PutRequest::kData) {
                result = {grpc::StatusCode::INVALID_ARGUMENT, "message without data"};
                break;
            }
            const std::string &d = msg.data();
            EVP_DigestUpdate(sha, d.data(), d.size());
            if (write(fd, d.data(), d.size()) != static_cast<ssize_t>(d.size())) {
                result = {grpc::StatusCode::INTERNAL, "write failed"};
                break;
            }
            size += d.size();
        }
        unsigned char digest[SHA256_DIGEST_LENGTH];
        EVP_DigestFinal_ex(sha, digest, nullptr);
        EVP_MD_CTX_free(sha);
        std::string dig(reinterpret_cast<char *>(digest), sizeof digest);
        if (result.ok() && hdr.size() != 0 && hdr.size() != size)
            result = {grpc::StatusCode::DATA_LOSS, "size mismatch"};
        if (result.ok() && !hdr.sha256().empty() && hdr.sha256() != dig)
            result = {grpc::StatusCode::DATA_LOSS, "sha256 mismatch"};
        if (result.ok() && fsync(fd) != 0)
            result = {grpc::StatusCode::INTERNAL, "fsync failed"};
        close(fd);
        if (result.ok() && rename(tmp.c_str(), dst.c_str()) != 0)
            result = {grpc::StatusCode::INTERNAL, "rename failed"};
        if (!result.ok()) {
            unlink(tmp.c_str());
            return result;
        }
        info->set_name(hdr.name());
        info->set_size(size);
        info->set_sha256(dig);
        info->set_modified_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
        return grpc::Status::OK;
    }

    grpc::Status Get(grpc::ServerContext *, const ringstream::v1::GetRequest *req,
                     grpc::ServerWriter<ringstream::v1::Chunk> *writer) override {
        int fd = open(Path(req->name()).c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return {grpc::StatusCode::NOT_FOUND, req->name()};
        struct stat st;
        fstat(fd, &st);
        uint64_t size = st.st_size;
        if (req->offset() > size) {
            close(fd);
            return {grpc::StatusCode::OUT_OF_RANGE, "offset past the end"};
        }
        uint64_t end = size;
        if (req->length() != 0 && req->offset() + req->length() < size)
            end = req->offset() + req->length();
        uint64_t chunk = req->chunk_size() == 0 ? kDefaultChunk
                         : req->chunk_size() > kMaxChunk ? kMaxChunk
                                                         : req->chunk_size();
        ringstream::v1::Chunk out;
        grpc::WriteOptions opts;
        for (uint64_t off = req->offset(); off < end;) {
            uint64_t n = end - off < chunk ? end - off : chunk;
            std::string *data = out.mutable_data();
            data->resize(n);
            if (pread(fd, data->data(), n, off) != static_cast<ssize_t>(n)) {
                close(fd);
                return {grpc::StatusCode::INTERNAL, "read failed"};
            }
            out.set_offset(off);
            out.set_crc32c(Crc32c(*data));
            if (!writer->Write(out, opts)) {
                close(fd);
                return {grpc::StatusCode::CANCELLED, "client went away"};
            }
            off += n;
        }
        close(fd);
        return grpc::Status::OK;
    }

    grpc::Status Echo(grpc::ServerContext *,
                      grpc::ServerReaderWriter<ringstream::v1::Chunk, ringstream::v1::Chunk> *stream)
        override {
        ringstream::v1::Chunk in;
        uint64_t off = 0;
        while (stream->Read(&in)) {
            size_t n = in.data().size();
            in.set_offset(off);
            in.set_crc32c(Crc32c(in.data()));
            if (!stream->Write(in))
                return {grpc::StatusCode::CANCELLED, "client went away"};
            off += n;
        }
        return grpc::Status::OK;
    }

    // Delete lets perf/compare clear the Put scenario's object before a timed upload, so the
    // check afterwards proves that this upload was published.
    grpc::Status Delete(grpc::ServerContext *, const ringstream::v1::DeleteRequest *req,
                        ringstream::v1::ObjectInfo *info) override {
        if (unlink(Path(req->name()).c_str()) != 0)
            return {grpc::StatusCode::NOT_FOUND, req->name()};
        info->set_name(req->name());
        return grpc::Status::OK;
    }

  private:
    std::string Path(const std::string &name) const {
        unsigned char h[SHA256_DIGEST_LENGTH];
        SHA256(reinterpret_cast<const unsigned char *>(name.data()), name.size(), h);
        return dir_ + "/objects/" + Hex(h, sizeof h);
    }

    std::string dir_;
};

class TestImpl final : public grpc::testing::TestService::Service {
  public:
    grpc::Status UnaryCall(grpc::ServerContext *, const grpc::testing::SimpleRequest *req,
                           grpc::testing::SimpleResponse *resp) override {
        if (req->response_size() < 0)
            return {grpc::StatusCode::INVALID_ARGUMENT, "negative response_size"};
        resp->mutable_payload()->mutable_body()->assign(req->response_size(), '\0');
        return grpc::Status::OK;
    }
};

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: compare-cpp PORT DATA_DIR\n");
        return 2;
    }
    std::string dir = argv[2];
    mkdir(dir.c_str(), 0755);
    mkdir((dir + "/objects").c_str(), 0755);
    mkdir((dir + "/tmp").c_str(), 0755);
    BulkImpl bulk(dir);
    TestImpl test;
    grpc::ServerBuilder b;
    std::string addr = std::string("127.0.0.1:") + argv[1];
    b.AddListeningPort(addr, grpc::InsecureServerCredentials());
    b.SetMaxReceiveMessageSize(kMaxMsg);
    b.SetMaxSendMessageSize(kMaxMsg);
    b.RegisterService(&bulk);
    b.RegisterService(&test);
    std::unique_ptr<grpc::Server> server = b.BuildAndStart();
    if (!server) {
        fprintf(stderr, "compare-cpp: cannot listen on %s\n", addr.c_str());
        return 1;
    }
    fprintf(stderr, "listening on %s\n", addr.c_str());
    server->Wait();
    return 0;
}
