// Command nms shows how a network management system embeds fwupgrader: an
// HTTP server with a REST API modelled on openwisp-firmware-upgrader's,
// live progress as Server-Sent Events, and a small status page that follows
// a mass upgrade device by device.
//
//	go run ./examples/nms                                  # memory store, 4 simulated devices
//	go run ./examples/nms --addr :8080 --simulate 20
//	go run ./examples/nms --store postgres://user:pass@localhost/nms --simulate 4
//
// Then open http://localhost:8080/, pick the build and press "Upgrade", or
// use the API:
//
//	curl -s localhost:8080/api/v1/firmware-upgrader/build/
//	curl -s -X POST localhost:8080/api/v1/firmware-upgrader/build/BUILD/upgrade/
//	curl -sN 'localhost:8080/api/v1/firmware-upgrader/events/?batch=BATCH'
//
// # Flags
//
//   - --addr: the listen address (default ":8080").
//   - --store: "memory" (the default; nothing survives a restart) or a
//     PostgreSQL URL (postgres://…): the schema is migrated at start and
//     image bytes are kept in the database (postgres.NewFiles).
//   - --schema: the PostgreSQL schema (default "fwupgrader").
//   - --simulate N: start N simulated OpenWrt devices (openwrt/openwrttest,
//     real SSH on 127.0.0.1) on OpenWrt 22.03.5, register them as devices
//     (group "simulated"), and make sure a shared category with a 22.03.5
//     build (what they run) and a 23.05.3 build (what they can be upgraded
//     to) exists, so the demo works out of the box (default 4; 0 for none).
//   - --orgs: the organizations the simulated devices are spread over,
//     comma-separated (default "default").
//
// Only simulated devices have credentials here: an NMS hands out the
// address, SSH credentials and host key of each of its devices in
// openwrt.Config.CredentialsFunc (see newApp), from its own inventory and
// vault; the devices come from its inventory through Engine.RegisterDevice.
//
// # Organizations
//
// The caller's organization is the X-Organization request header (a real
// NMS derives it from the authenticated user; this example has no
// authentication). With it, every request is scoped to that organization:
// lists hold its objects and the shared ones (categories, builds and images
// with no organization), an object of another organization is 404, objects
// are created in that organization (a body naming another is 403), shared
// categories and builds are read-only, and a batch upgrade selects only the
// organization's devices. Without it the caller sees every organization and
// may filter lists with ?organization=NAME. The events endpoint also takes
// ?organization=NAME as its scope, since browsers' EventSource cannot send
// headers.
//
// # Endpoints
//
// All under /api/v1/firmware-upgrader/; IDs are the store's (UUIDs). JSON
// bodies need Content-Type: application/json and at most 1 MiB.
//
//	GET    category/                       list (?organization=, ?name=)
//	POST   category/                       {"name", "description", "organization"}
//	GET    category/{id}/
//	GET    build/                          list (?organization=, ?category=, ?os=)
//	POST   build/                          {"category", "version", "os", "changelog"}
//	GET    build/{id}/
//	GET    build/{id}/image/               list (?type=)
//	POST   build/{id}/image/               multipart/form-data: optional "type", "name"
//	                                       and "sha256" fields, then the "file" part
//	GET    build/{id}/image/{image}/
//	GET    build/{id}/image/{image}/download/   the bytes (Range requests work)
//	GET    build/{id}/upgrade/             dry run (?group=, ?location=, ?devices=a,b,
//	                                       ?firmwareless=1, ?check=1 runs the read-only
//	                                       checks on every selected device)
//	POST   build/{id}/upgrade/             start a batch upgrade: {"name", "organization",
//	                                       "group", "location", "devices", "firmwareless",
//	                                       "upgrade_options", "rollout", "hold"};
//	                                       ?dry_run=1 (and ?check=1) plans it only
//	GET    batch-upgrade-operation/        list (?organization=, ?build=, ?status=)
//	GET    batch-upgrade-operation/{id}/   counts, summary ("3 of 4 done, …"), rollout
//	POST   batch-upgrade-operation/{id}/{start,pause,resume,cancel}/
//	GET    upgrade-operation/              list (?organization=, ?batch=, ?device=,
//	                                       ?build=, ?image=, ?status=a,b, ?group=, ?location=)
//	GET    upgrade-operation/{id}/         with its log
//	POST   upgrade-operation/{id}/cancel/  409 once flashing started
//	GET    device/                         list (?organization=, ?group=, ?location=, ?os=)
//	GET    device/{id}/                    the device and its firmware (also …/firmware/)
//	PUT    device/{id}/                    {"image", "upgrade_options"}: upgrade one device
//	GET    device/{id}/upgrade-operation/  its operations
//	GET    events/                         Server-Sent Events (?batch=, ?operation=,
//	                                       ?organization=)
//
// A rollout is {"max_concurrent": 2, "start_rate": {"count": 10, "per": "1m"},
// "waves": "1,10%,100%", "wave_wait": "10m", "failure_threshold": 20,
// "min_finished": 3, "success_threshold": 90, "group_limit": 1,
// "group_by": "location", "start_at": "2025-01-01T01:00:00Z",
// "windows": ["01:00-05:00 Europe/Rome"]}.
//
// Lists are paginated like Django REST framework's page-number pagination:
// ?page=N&page_size=M (default 20, at most 100) answer {"count", "next",
// "previous", "results"}. For large lists, ?cursor=ID&page_size=M walks them
// in ID order from the store's keyset pagination (next only, no count); the
// first page of that walk is ?cursor= (empty).
//
// Errors are JSON, {"detail": "..."}: a body that is not JSON, or with
// unknown fields, is 400; one over the limit 413 (an image over the
// engine's MaxImageSize too); a wrong Content-Type 415; an unknown or
// invisible ID 404; a conflict (a duplicate name, a device busy, a state that
// forbids the change) 409. A refused request stores nothing.
//
// # Events
//
// events/ streams "snapshot" (with ?batch=: the batch and all its operations,
// sent first and again whenever the stream lost events), "operation"
// (state, phase, progress), "log" (a log line) and "batch" (state and counts)
// events, each a JSON object, with a comment every 15 s to keep proxies
// awake; a stream without ?batch= that lost events says how many in a
// "dropped" event. The stream never slows the engine: a client that does not keep up
// loses events (and gets a new snapshot), and one that stops reading for
// longer than the write timeout is disconnected.
package main
