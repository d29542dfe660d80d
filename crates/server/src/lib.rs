//! The hirewire web application: pages, REST API, OAuth callbacks and workers.
