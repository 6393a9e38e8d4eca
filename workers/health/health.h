/* workers/health/health.h: grpc.health.v1.Health (proto/health.proto), the standard gRPC
 * health checking service (grpc/grpc doc/health-checking.md).
 *
 * The daemon creates one registry, adds the names of the services it serves, registers the
 * service and starts the server; from then on the registry is read-only and every worker reads
 * it without locks. "" (the server as a whole) and every added name are SERVING; while the
 * server drains they are NOT_SERVING.
 *
 * Check answers the status now, or NOT_FOUND for a name never added. Watch sends the status
 * now (SERVICE_UNKNOWN for a name never added) and keeps the stream open; when the server
 * starts draining it sends NOT_SERVING and finishes the call OK. */
#ifndef RS_WORKERS_HEALTH_HEALTH_H
#define RS_WORKERS_HEALTH_HEALTH_H
#include "core/call.h"

struct rs_health;

/* Returns an owned, empty registry (release with rs_health_destroy), or NULL without memory. */
struct rs_health *rs_health_new(void);
/* Adds |service_name| ("package.Service"; copied). Adding a name twice is harmless. Before the
 * server starts only. Returns 0, -EINVAL for NULL, or -ENOMEM. */
int rs_health_add(struct rs_health *h, const char *service_name);
/* The service to register; valid until rs_health_destroy(). */
const struct rs_service *rs_health_service(struct rs_health *h);
/* Accepts NULL. Only after the server that served the service is gone. */
void rs_health_destroy(struct rs_health *h);

#endif /* RS_WORKERS_HEALTH_HEALTH_H */
