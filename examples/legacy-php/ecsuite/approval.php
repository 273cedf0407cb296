<?php
// EC Suite Approval Post URL: creates the member from the background post.
require __DIR__ . '/../_store.php';

$fname = isset($_POST['customer_fname']) ? $_POST['customer_fname'] : '';
$username = isset($_POST['username']) ? $_POST['username'] : '';
$subscription = isset($_POST['subscription_id']) ? $_POST['subscription_id'] : '';
if ($username === '' || $subscription === '') {
    http_response_code(400);
    echo "missing username or subscription_id\n";
    exit;
}
legacy_record('approval', array(
    'username'        => $username,
    'customer_fname'  => $fname,
    'email'           => isset($_POST['email']) ? $_POST['email'] : '',
    'subscription_id' => $subscription,
));
header('Content-Type: text/plain');
echo "APPROVED " . $username . "\n";
