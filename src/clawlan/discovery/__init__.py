"""mDNS on the LAN: the back end advertises itself, front ends browse for it.

``service`` names the DNS-SD type and TXT keys (the contract both sides share);
``advertiser`` registers the back end; ``browser`` finds it.
"""
