//! Provider adapters: Microsoft 365 (Entra ID + Graph) and Google Workspace (OAuth + Gmail + Calendar).
