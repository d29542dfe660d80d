//! A local stand-in for Microsoft identity + Graph and Google OAuth + Gmail + Calendar.
