//! The mail core: MIME parsing, participants, address matching, threading keys and safe HTML.
