//! `maschera retention run`: storage limitation (GDPR Art. 5.1.e), applying the retention rules of the
//! policy file.
