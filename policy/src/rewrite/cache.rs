//! placeholder
pub struct RewriteCache;
pub struct CacheStats;
