"""Generated gRPC code for the vxlab v1 API (see vxlab.proto); only vxlab.client and vxlab.controller.servicer import it."""
