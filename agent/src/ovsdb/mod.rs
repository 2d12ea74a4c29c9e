//! OVSDB JSON-RPC client, RFC 7047 (placeholder).
